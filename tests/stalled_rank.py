"""Two ranks under torchrun's environment variables, with a short collective bound (argv[1]
minutes): rank 0 first works alone for longer than that bound (a once-per-job wait, which must not
fail), then rank 1 stops itself (SIGSTOP) and rank 0's next collective must fail within the short
bound.

Run by ``tests/test_distributed.py``."""

import os
import signal
import sys
import time

import torch
import torch.distributed as dist

from recbole_llmsrec.distribution import process_group as distributed

short = float(sys.argv[1])
final = {"gpu_id": "", "distributed_timeout_minutes": short, "distributed_once_timeout_minutes": 60}
distributed.join_process_group(final)
value = distributed.from_rank0(
    final, time.sleep(short * 60 * 1.5) or "done" if dist.get_rank() == 0 else None
)
print(f"once-per-job wait: {value}", flush=True)
if dist.get_rank() == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # stops answering, without exiting
started = time.monotonic()
try:
    dist.all_reduce(torch.ones(1))
    print("no timeout", flush=True)
except RuntimeError as error:
    print(
        f"failed after {time.monotonic() - started:.1f} s: {str(error).splitlines()[0][:100]}",
        flush=True,
    )
