"""Memory of N processes on one machine preparing the same data (issue 21, item 2): the machine's
first process builds it, the others map its files (``recbole_llmsrec.data.shared``).

    python benchmarks/shared_data.py                    # 3M interactions, 1 and 8 processes
    python benchmarks/shared_data.py --size 10 --processes 1 2 8

Each row launches ``torchrun --nproc_per_node=N`` (gloo, CPU) on Books-shaped data
(``benchmarks/data_scale.py`` writes it); every process builds its run's data through the plugin
(``create_dataset`` + ``data_preparation``), reads every stored column and collates a few batches,
then waits for the others. The parent samples the processes' summed PSS (proportional set size:
a page shared by k processes counts 1/k in each, so the sum is the machine's memory) every 0.2 s
and reports its peak, beside N processes that only import the plugin and build a Config (what N
interpreters cost whatever the data).
"""

import argparse
import os
import subprocess
import sys
import time

import psutil
from data_scale import settings, write_books_like

SAMPLE_SECONDS = 0.2
BATCHES = 5  # training batches each process collates after the build


def child(data_path, name, model, bare):
    """One process of the launch: the Config, then (unless ``bare``) the data, touched."""
    from recbole_llmsrec import Config
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.distribution.process_group import wait_for_rank0
    from recbole_llmsrec.evaluation.loaders import data_preparation

    sys.argv = sys.argv[:1]
    config = Config(model=model, dataset=name, config_dict=settings(model, data_path, 50))
    if not bare:
        train_data, _, _ = data_preparation(config, create_dataset(config))
        store = train_data._dataset.sequences
        checksum = sum(float(store[field].sum()) for field in store.interaction)
        batches = iter(train_data)
        for _ in range(BATCHES):
            next(batches)
        memory = psutil.Process().memory_full_info()
        print(
            f"rank {config['local_rank']}: store checksum {checksum:.6g}, PSS "
            f"{memory.pss / 2**30:.2f} GiB, private {memory.uss / 2**30:.2f} GiB",
            file=sys.stderr,
        )
    wait_for_rank0()
    time.sleep(4 * SAMPLE_SECONDS)  # every process at its steady state in one sample
    wait_for_rank0()


def tree_pss(process):
    """Summed PSS (bytes) of ``process`` and its descendants."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def launch(processes, data_path, name, model, bare):
    """``(peak summed PSS in GiB, wall seconds)`` of one torchrun launch."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    command += ["--master_port=29517", __file__, "--child", data_path, name, model]
    command += ["--bare"] if bare else []
    start, peak = time.perf_counter(), 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr) as run:
        watched = psutil.Process(run.pid)
        while run.poll() is None:
            peak = max(peak, tree_pss(watched))
            time.sleep(SAMPLE_SECONDS)
    if run.returncode:
        raise SystemExit(f"{processes} processes failed (exit {run.returncode})")
    return peak / 2**30, time.perf_counter() - start


def main():
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5], bare="--bare" in sys.argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=3, help="millions of interactions")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--work", default="/tmp/recbole_llmsrec_data_scale")
    args = parser.parse_args()
    data_path, name = write_books_like(args.work, int(args.size * 10**6))
    rows = []
    for processes in args.processes:
        data, wall = launch(processes, data_path, name, args.model, bare=False)
        bare, _ = launch(processes, data_path, name, args.model, bare=True)
        rows.append((processes, data, bare, wall))
        print(rows[-1], file=sys.stderr, flush=True)
    one = rows[0][1]
    print(f"\n{args.size:g} M interactions, {args.model}, MAX_ITEM_LIST_LENGTH 50, 2 CPU cores")
    print("| processes | peak PSS, all processes | vs the first row | interpreters alone | wall |")
    print("| --- | --- | --- | --- | --- |")
    for processes, data, bare, wall in rows:
        print(
            f"| {processes} | {data:.2f} GiB | {data / one:.2f}x | {bare:.2f} GiB | {wall:.0f} s |"
        )


if __name__ == "__main__":
    main()
