"""HLLM throughput and memory on ml-100k: item texts encoded/s, training sequences/s, users
evaluated/s, peak memory and the padding fraction of the Item LLM input; on GPU also tokens/s and
model FLOPs utilisation. Prints a markdown table.

    # CPU, tiny random Llamas, ml-100k titles
    python benchmarks/hllm.py
    # Books-like texts: ~200 tokens each
    python benchmarks/hllm.py --texts books
    # TinyLlama-1.1B shape, bf16
    python benchmarks/hllm.py --size 1b --device cuda --texts books

Weights are random (built from the config, nothing downloaded): the figures are speeds, not
accuracy. ``--texts books`` replaces every item's tokens with random ids of a Books-like length
(normal, mean 200, sd 50, within [16, max_text_length]). On CUDA the Item LLM packs texts (no
padding); on CPU it pads. MFU counts the model FLOPs of a training step (forward + backward, no
recomputation): per real (non-padding) token 6 x parameters, plus causal attention 6 x layers x
hidden size x the length of the token's sequence, summed over both LLMs, against the GPU's dense
bf16 peak (989 TFLOP/s, H100/H200).
"""

import argparse
import resource
import sys
import time

import torch
from llm_shapes import PAPER_LLAMAS, TINY_LLAMA

import recbole_llmsrec.models.hllm.model as hllm_module
from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.llm.loading import enable_gradient_checkpointing

SHAPES = {"tiny": TINY_LLAMA, "1b": PAPER_LLAMAS["TinyLlama-1.1B"]}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def parse_args():
    """The command line; fills in the tokenizer when it is left out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: offline MiniLM)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--texts",
        choices=["ml-100k", "books"],
        default="ml-100k",
        help="item texts: ml-100k's titles, or Books-like lengths (~200 tokens)",
    )
    parser.add_argument(
        "--item-encode-tokens",
        type=int,
        default=None,
        help="Item LLM token budget per forward (default: the model YAML's)",
    )
    args = parser.parse_args()
    if args.tokenizer is None:
        from recbole_llmsrec.tools.tiny_llm import default_tokenizer_path

        args.tokenizer = default_tokenizer_path()
    return args


def build_llm(size, vocab, device):
    from transformers import LlamaConfig, LlamaModel

    with torch.device(device):
        return LlamaModel(
            LlamaConfig(**{"vocab_size": vocab, "max_position_embeddings": 4096, **SHAPES[size]})
        )


def build_model(args):
    """``(config, model, train loader, test loader, vocabulary size)``: HLLM on ml-100k with two
    random Llamas handed in place of ``item_llm_path``/``user_llm_path`` loading."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    vocab = SHAPES[args.size].get("vocab_size", len(tokenizer))
    item_llm = build_llm(args.size, vocab, args.device)
    user_llm = build_llm(args.size, vocab, args.device)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(item_llm)
        enable_gradient_checkpointing(user_llm)
    llms = iter([(item_llm, tokenizer), (user_llm, None)])  # HLLM loads the Item LLM first
    hllm_module.load_llm_from_config = lambda *a, **k: next(llms)

    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    overrides = {"use_gpu": args.device == "cuda", "show_progress": False}
    if args.item_encode_tokens:
        overrides["item_encode_tokens"] = args.item_encode_tokens
    config = Config(model="HLLM", dataset="ml-100k", config_dict=overrides)
    from recbole.data import data_preparation

    train_data, _, test_data = data_preparation(config, create_dataset(config))
    model = hllm_module.HLLM(config, train_data._dataset).to(args.device)
    return config, model, train_data, test_data, vocab


def use_books_like_texts(model, config, vocab):
    """Replace every item's tokens with random ids of a Books-like length."""
    generator = torch.Generator().manual_seed(0)
    lengths = (
        (torch.randn(model.n_items, generator=generator) * 50 + 200)
        .clamp(16, config["max_text_length"])
        .long()
        .tolist()
    )
    model.item_token_ids = [[]] + [
        torch.randint(5, vocab, (n,), generator=generator).tolist() for n in lengths[1:]
    ]


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device, fn):
    """Seconds of ``fn()``, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_training(model, train_data, steps, device):
    """``(seconds, sequences, tokens)`` of ``steps`` AdamW steps after two warm-up steps; ``tokens``
    counts the real tokens through each LLM and the sums of their sequences' squared lengths."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batches = [b.to(device) for _, b in zip(range(steps + 2), train_data)]
    tokens = {"item": 0, "user": 0, "item_squares": 0, "user_squares": 0}
    original_encode = model._encode_batch

    def counting_encode(items):
        lengths = [len(model.item_token_ids[i]) + 1 for i in items]
        tokens["item"] += sum(lengths)
        tokens["item_squares"] += sum(n * n for n in lengths)
        return original_encode(items)

    def step(batch):
        loss = model.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def timed_steps():
        for batch in batches[2:]:
            tokens["user"] += int(batch[model.ITEM_SEQ_LEN].sum())
            tokens["user_squares"] += int((batch[model.ITEM_SEQ_LEN] ** 2).sum())
            step(batch)

    model.train()
    for batch in batches[:2]:
        step(batch)
    model._encode_batch = counting_encode
    train_time = timed(device, timed_steps)
    model._encode_batch = original_encode
    return train_time, sum(len(b) for b in batches[2:]), tokens


def measure_evaluation(config, model, test_data, device):
    """Seconds of one pass over every item's text (after a warm-up pass) and of a full sort
    evaluation with the item matrix ready."""
    from recbole.trainer import Trainer

    model.eval()
    model.item_matrix()  # warm-up
    model._item_matrix = None
    item_time = timed(device, model.item_matrix)
    trainer = Trainer(config, model)
    eval_time = timed(device, lambda: trainer.evaluate(test_data, load_best_model=False))
    return item_time, eval_time


def item_tokens(model):
    """``(real, padded)`` Item LLM tokens of the evaluation's token-budget batches of all items."""
    batches_of_items = model.token_budget_batches(list(range(1, model.n_items)))
    real = sum(len(model.item_token_ids[i]) + 1 for b in batches_of_items for i in b)
    padded = sum(
        len(b) * (max(len(model.item_token_ids[i]) for i in b) + 1) for b in batches_of_items
    )
    return real, padded


def training_flops(model, tokens):
    """Model FLOPs of the timed training steps, both LLMs (see the module docstring)."""
    return sum(
        6 * llm.num_parameters() * tokens[name]
        + 6 * llm.config.num_hidden_layers * llm.config.hidden_size * tokens[f"{name}_squares"]
        for name, llm in (("item", model.item_llm), ("user", model.user_llm))
    )


def print_header(args, config, model, real, packed, device_name):
    """The line above the table: texts, LLM shapes, device, batch and the Item LLM's batching."""
    params = model.item_llm.num_parameters() + model.user_llm.num_parameters()
    print(
        f"\nHLLM on ml-100k ({args.texts} texts, mean {real / (model.n_items - 1):.0f} tokens), "
        f"{args.size} Llama x2 ({params / 1e6:.1f}M params in all, fp32 weights, "
        f"{'bf16 autocast' if args.device == 'cuda' else 'fp32'}), {device_name}, batch "
        f"{config['train_batch_size']}, {config['num_negatives']} negatives, MAX_ITEM_LIST_LENGTH "
        f"{config['MAX_ITEM_LIST_LENGTH']}, item_encode_tokens {model.item_encode_tokens} "
        f"({'packed' if packed else 'padded'})\n"
    )


def print_gpu_rows(model, tokens, train_time, device_name):
    """Training tokens/s, MFU (on a GPU of known peak) and peak GPU memory."""
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)
    print(
        "| training tokens/s (Item + User LLM) | "
        f"{(tokens['item'] + tokens['user']) / train_time:,.0f} |"
    )
    if peak:
        mfu = training_flops(model, tokens) / train_time / (peak * 1e12)
        print(f"| model FLOPs utilisation (training) | {mfu:.1%} |")
    print(f"| peak memory (GPU allocated) | {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB |")


def print_table(args, config, model, training, evaluation, n_users):
    """The markdown table; ``training``: ``measure_training``'s result, ``evaluation``:
    ``measure_evaluation``'s, over ``n_users`` test users."""
    train_time, sequences, tokens = training
    item_time, eval_time = evaluation
    real, padded = item_tokens(model)
    packed = model.packs_texts(torch.device(args.device))  # what _encode_batch does there
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print_header(args, config, model, real, packed, device_name)
    print("| measure | value |\n| --- | --- |")
    print(
        f"| item texts encoded/s (eval, all {model.n_items - 1} items) | "
        f"{(model.n_items - 1) / item_time:.1f} |"
    )
    print(f"| training sequences/s | {sequences / train_time:.2f} |")
    print(f"| users evaluated/s (full sort, item matrix ready) | {n_users / eval_time:.1f} |")
    print(
        f"| Item LLM padding fraction (eval batches) | {0 if packed else 1 - real / padded:.3f} |"
    )
    if args.device == "cuda":
        print_gpu_rows(model, tokens, train_time, device_name)
    else:
        print(
            "| peak memory (process RSS) | "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB |"
        )


def main():
    args = parse_args()
    config, model, train_data, test_data, vocab = build_model(args)
    if args.texts == "books":
        use_books_like_texts(model, config, vocab)
    training = measure_training(model, train_data, args.steps, args.device)
    evaluation = measure_evaluation(config, model, test_data, args.device)
    print_table(args, config, model, training, evaluation, len(test_data._dataset))


if __name__ == "__main__":
    main()
