"""LLM-SRec throughput and memory on ml-100k: training users/s, evaluation users/s (uni100 and full
sort), item representations/s and peak memory. Prints a markdown table.

    # CPU, tiny random Llama (2 layers, hidden 64)
    python benchmarks/llmsrec.py
    # Llama-3.2-3B-shaped, random weights, bf16
    python benchmarks/llmsrec.py --size 3b --device cuda

Weights are random (built from the config, nothing downloaded) and the SASRec teacher is untrained:
the figures are speeds, not accuracy. The LLM is handed to the model in place of ``llm_path``
loading.
"""

import argparse
import resource
import sys
import time

import torch
from llm_shapes import PAPER_LLAMAS, TINY_LLAMA

import recbole_llmsrec.models.cf_teacher.model as cf_teacher_model
from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.llm.loading import enable_gradient_checkpointing, freeze
from recbole_llmsrec.models.llmsrec.model import LLMSRec

SHAPES = {"tiny": TINY_LLAMA, "3b": PAPER_LLAMAS["Llama-3.2-3B"]}


def parse_args():
    """The command line; fills in the dtype and the tokenizer when they are left out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: offline MiniLM)")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--max-len", type=int, default=128, help="MAX_ITEM_LIST_LENGTH")
    parser.add_argument("--profile", action="store_true", help="print the top ops of one item pass")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    if args.tokenizer is None:
        from recbole_llmsrec.tools.tiny_llm import default_tokenizer_path

        args.tokenizer = default_tokenizer_path()
    return args


def build_llm(size, tokenizer_path, device, dtype, gradient_checkpointing):
    """A frozen random-weight Llama of shape ``size`` and the tokenizer at ``tokenizer_path``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    shape = {"vocab_size": len(tokenizer), "max_position_embeddings": 4096, **SHAPES[size]}
    config = LlamaConfig(**shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaModel(config)
    torch.set_default_dtype(previous)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return freeze(model), tokenizer


def build_model(args, llm, tokenizer, checkpointing):
    """``(config, model, (train, uni100, full sort loaders))``: LLMSRec on ml-100k with ``llm``
    handed in place of ``llm_path`` loading, its (untrained) teacher marked ready."""
    cf_teacher_model.load_llm_from_config = lambda config, **options: (llm, tokenizer)
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    config = Config(
        model="LLMSRec",
        dataset="ml-100k",
        config_dict={
            "use_gpu": args.device == "cuda",
            "show_progress": False,
            "MAX_ITEM_LIST_LENGTH": args.max_len,
            "llm_gradient_checkpointing": checkpointing,
            "eval_args": {
                "split": {"LS": "valid_and_test"},
                "order": "TO",
                "mode": {"valid": "uni100", "test": "full"},
            },
        },
    )
    from recbole.data import data_preparation

    loaders = data_preparation(config, create_dataset(config))
    model = LLMSRec(config, loaders[0]._dataset).to(args.device)
    model.mark_cf_teacher_ready()
    return config, model, loaders


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device, fn):
    """``(seconds, result)`` of ``fn()``, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def second_run(device, fn):
    """Seconds of a second ``fn()``: the first run warms kernels and caches up."""
    fn()
    return timed(device, fn)[0]


def peak_memory_gib(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def training_rate(model, train_data, steps, device):
    """Training users/s over ``steps`` Adam steps, after two warm-up steps."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_steps(batches):
        for batch in batches:
            rec, distill = model.calculate_loss(batch.to(device))
            optimizer.zero_grad()
            (rec + distill).backward()
            optimizer.step()

    model.train()
    batches = [b for _, b in zip(range(steps + 2), train_data)]
    train_steps(batches[:2])  # warm-up
    train_time, _ = timed(device, lambda: train_steps(batches[2:]))
    return sum(len(b) for b in batches[2:]) / train_time


def evaluation_times(config, model, uni100_data, full_data, device):
    """Seconds of one pass over every item's representation, of a uni100 evaluation and of a full
    sort evaluation (both with the item matrix ready)."""
    from recbole.trainer import Trainer

    trainer = Trainer(config, model)
    model.eval()

    def fresh_item_matrix():
        model._item_matrix = None
        model.item_matrix()

    item_time = second_run(device, fresh_item_matrix)
    uni_time = second_run(device, lambda: trainer.evaluate(uni100_data, load_best_model=False))
    full_time = second_run(device, lambda: trainer.evaluate(full_data, load_best_model=False))
    assert model.item_matrix_computations == 2  # the two timed item passes; evaluation reused them
    return item_time, uni_time, full_time


def profile_item_pass(model, device):
    """Print the top 25 ops (by CPU time) of one pass over every item."""
    from torch.profiler import ProfilerActivity, profile

    model._item_matrix = None
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        model.item_matrix()
        synchronize(device)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))


def print_table(args, config, model, checkpointing, rates):
    """The markdown table; ``rates``: training users/s, item representations/s, uni100 and full
    sort evaluation users/s."""
    train_rate, item_rate, uni_rate, full_rate = rates
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"\nLLMSRec on ml-100k, {args.size} LLM ({model.llm.num_parameters() / 1e6:.1f}M params, "
        f"{str(args.dtype).replace('torch.', '')}), {name}, MAX_ITEM_LIST_LENGTH={args.max_len}, "
        f"train batch {config['train_batch_size']}, gradient checkpointing {checkpointing}\n"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| training users/s | {train_rate:.1f} |")
    print(f"| item representations/s (all {model.n_items - 1} items) | {item_rate:.1f} |")
    print(f"| eval users/s, uni100 (item matrix ready) | {uni_rate:.1f} |")
    print(f"| eval users/s, full sort (item matrix ready) | {full_rate:.1f} |")
    print(
        f"| peak memory ({'GPU allocated' if args.device == 'cuda' else 'process RSS'}) | "
        f"{peak_memory_gib(args.device):.2f} GiB |"
    )


def main():
    args = parse_args()
    checkpointing = args.size == "3b"
    llm, tokenizer = build_llm(args.size, args.tokenizer, args.device, args.dtype, checkpointing)
    config, model, (train_data, uni100_data, full_data) = build_model(
        args, llm, tokenizer, checkpointing
    )
    train_rate = training_rate(model, train_data, args.train_steps, args.device)
    item_time, uni_time, full_time = evaluation_times(
        config, model, uni100_data, full_data, args.device
    )
    if args.profile:
        profile_item_pass(model, args.device)
    n_users = len(full_data._dataset)  # one test row per user
    rates = (train_rate, (model.n_items - 1) / item_time, n_users / uni_time, n_users / full_time)
    print_table(args, config, model, checkpointing, rates)


if __name__ == "__main__":
    main()
