"""Memory and time of the sequential data layer at the papers' scale, on Books-shaped data.

    python benchmarks/data_scale.py              # 1M and 3M interactions; SASRec, LLMSRec, HLLM
    python benchmarks/data_scale.py --sizes 1 3 10 --models SASRec --max-len 50

Books-shaped synthetic data: 14.5 interactions per user on average (5 at least, a geometric tail),
items drawn with power-law popularity (Zipf exponent 1.1 over as many items as users), increasing
timestamps per user, a short title per item. Each (size, model) is built in a fresh process through
the plugin's ``create_dataset`` + ``data_preparation`` (the path every run takes); the table gives
that process's peak RSS and CPU time, the wall time of the build and the mean time to collate one
training batch. The data files are written once per size under ``--work`` and reused.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

MEAN_PER_USER, MIN_PER_USER, ZIPF = 14.5, 5, 1.1
STEPS = 20  # batches collated (and SASRec steps timed) per row; medians reported


def write_books_like(folder, interactions, seed=0):
    """``{folder}/books{M}/books{M}.inter`` and ``.item`` with about ``interactions`` rows."""
    name = f"books{interactions // 10**6}m"
    path = os.path.join(folder, name)
    if os.path.isfile(os.path.join(path, f"{name}.item")):
        return folder, name
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    users = int(interactions / MEAN_PER_USER)
    lengths = MIN_PER_USER + rng.geometric(1 / (MEAN_PER_USER - MIN_PER_USER + 1), users) - 1
    items = users
    popularity = 1.0 / np.arange(1, items + 1) ** ZIPF
    chosen = rng.choice(items, size=int(lengths.sum()), p=popularity / popularity.sum())
    user_of = np.repeat(np.arange(users), lengths)
    start = np.repeat(rng.integers(1.3e9, 1.6e9, users), lengths)
    offset = np.arange(len(user_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    with open(os.path.join(path, f"{name}.inter"), "w") as file:
        file.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for block in range(0, len(user_of), 10**6):
            rows = slice(block, block + 10**6)
            lines = np.char.add(np.char.add("u", user_of[rows].astype(str)), "\ti")
            lines = np.char.add(np.char.add(lines, chosen[rows].astype(str)), "\t")
            lines = np.char.add(lines, (start[rows] + offset[rows] * 3600).astype(str))
            file.write("\n".join(lines.tolist()) + "\n")
    with open(os.path.join(path, f"{name}.item"), "w") as file:
        file.write("item_id:token\ttitle:token_seq\n")
        file.write("\n".join(f"i{i}\tBook number {i}" for i in range(items)) + "\n")
    return folder, name


def settings(model, data_path, max_len):
    """The config of one build: the data as RecBole reads it, the LLMs never loaded."""
    return {
        "data_path": data_path,
        "MAX_ITEM_LIST_LENGTH": max_len,
        "train_neg_sample_args": None,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
        "user_inter_num_interval": "[5,inf)",
        "use_gpu": False,
        "show_progress": False,
        "state": "error",
        "train_batch_size": 256,
        "checkpoint_dir": os.path.join(data_path, "saved"),
    }


def build(config, layout):
    """The split data of ``config`` (``layout`` "compact": the plugin's path; "materialised": the
    same dataset class with RecBole's own lists, the path before issue 21)."""
    from recbole_llmsrec.data.dataset import create_dataset, plugin_dataset_class
    from recbole_llmsrec.data.sequences import materialised
    from recbole_llmsrec.evaluation.loaders import data_preparation

    if layout == "materialised":
        dataset = materialised(plugin_dataset_class(config))(config)
    else:
        dataset = create_dataset(config)
    return data_preparation(config, dataset)[0]


def sasrec_step_ms(config, train_data, batch):
    """One SASRec training step (forward, backward, Adam) on ``batch``, in ms: what collating a
    batch is compared with."""
    import torch
    from recbole.model.sequential_recommender import SASRec

    model = SASRec(config, train_data._dataset)
    optimizer = torch.optim.Adam(model.parameters())
    times = []
    for _ in range(STEPS + 2):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:])) * 1000


def build_once(model, data_path, name, max_len, layout):
    """In this process: build and split the data, time ``STEPS`` batches' collation (and, for
    SASRec, its training step); returns the measurements."""
    from recbole_llmsrec import Config

    sys.argv = sys.argv[:1]
    config = Config(model=model, dataset=name, config_dict=settings(model, data_path, max_len))
    start = time.perf_counter()
    train_data = build(config, layout)
    built = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    batches, times = iter(train_data), []
    for _ in range(STEPS):
        start = time.perf_counter()
        batch = next(batches)
        times.append(time.perf_counter() - start)
    return {
        "rss_gib": usage.ru_maxrss / 2**20,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "build_s": built,
        "collate_ms": float(np.median(times)) * 1000,
        "step_ms": sasrec_step_ms(config, train_data, batch) if model == "SASRec" else None,
        "train_rows": len(train_data._dataset),
    }


def measure(model, data_path, name, max_len, layout):
    """``build_once`` in a fresh process (peak RSS is per process)."""
    command = [sys.executable, __file__, "--child", model, data_path, name, str(max_len), layout]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(rows):
    print(
        "| interactions | model | layout | peak RSS | CPU time | build | collate / batch "
        "| SASRec step | training rows |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, model, layout, result in rows:
        if "error" in result:
            print(f"| {size} M | {model} | {layout} | failed: {result['error']} | | | | | |")
            continue
        step = f"{result['step_ms']:.1f} ms" if result["step_ms"] else ""
        print(
            f"| {size} M | {model} | {layout} | {result['rss_gib']:.2f} GiB | "
            f"{result['cpu_s']:.0f} s | {result['build_s']:.0f} s | "
            f"{result['collate_ms']:.1f} ms | {step} | {result['train_rows']:,} |"
        )


def main():
    if sys.argv[1:2] == ["--child"]:
        model, data_path, name, max_len, layout = sys.argv[2:7]
        print(json.dumps(build_once(model, data_path, name, int(max_len), layout)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 3], help="millions")
    parser.add_argument("--models", nargs="+", default=["SASRec", "LLMSRec", "HLLM"])
    parser.add_argument("--layouts", nargs="+", default=["materialised", "compact"])
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--work", default="/tmp/recbole_llmsrec_data_scale")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        data_path, name = write_books_like(args.work, int(size * 10**6))
        for model in args.models:
            for layout in args.layouts:
                result = measure(model, data_path, name, args.max_len, layout)
                rows.append((size, model, layout, result))
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"\n2 CPU cores, MAX_ITEM_LIST_LENGTH {args.max_len}, batch 256")
    print_table(rows)


if __name__ == "__main__":
    main()
