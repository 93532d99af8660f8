"""HLLM throughput and memory on ml-100k: item texts encoded/s, training sequences/s, users evaluated/s,
peak memory and the padding fraction of the Item LLM input; on GPU also tokens/s and model FLOPs
utilisation. Prints a markdown table.

    python benchmarks/hllm.py                               # CPU, tiny random Llamas, ml-100k titles
    python benchmarks/hllm.py --texts books                 # Books-like texts: ~200 tokens each
    python benchmarks/hllm.py --size 1b --device cuda --texts books   # TinyLlama-1.1B shape, bf16

Weights are random (built from the config, nothing downloaded): the figures are speeds, not accuracy.
``--texts books`` replaces every item's tokens with random ids of a Books-like length (normal, mean 200,
sd 50, within [16, max_text_length]). On CUDA the Item LLM packs texts (no padding); on CPU it pads.
MFU counts the model FLOPs of a training step (forward + backward, no recomputation): per real
(non-padding) token 6 x parameters, plus causal attention 6 x layers x hidden size x the length of the
token's sequence, summed over both LLMs, against the GPU's dense bf16 peak (989 TFLOP/s, H100/H200).
"""

import argparse
import resource
import sys
import time

import torch

import recbole_llmsrec.model.hllm as hllm_module
from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset

SHAPES = {  # LlamaConfig keyword arguments
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000),   # TinyLlama-1.1B
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def build_llm(size, vocab, device):
    from transformers import LlamaConfig, LlamaModel

    with torch.device(device):
        return LlamaModel(LlamaConfig(**{"vocab_size": vocab, "max_position_embeddings": 4096,
                                         **SHAPES[size]}))


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: offline MiniLM)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--texts", choices=["ml-100k", "books"], default="ml-100k",
                        help="item texts: ml-100k's titles, or Books-like lengths (~200 tokens)")
    parser.add_argument("--item-encode-tokens", type=int, default=None,
                        help="Item LLM token budget per forward (default: the model YAML's)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    if args.tokenizer is None:
        from recbole_llmsrec.tools.tiny_llm import default_tokenizer_path
        args.tokenizer = default_tokenizer_path()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    vocab = SHAPES[args.size].get("vocab_size", len(tokenizer))
    item_llm, user_llm = build_llm(args.size, vocab, args.device), build_llm(args.size, vocab, args.device)
    if args.gradient_checkpointing:
        from recbole_llmsrec.llm import enable_gradient_checkpointing
        enable_gradient_checkpointing(item_llm)
        enable_gradient_checkpointing(user_llm)
    llms = iter([(item_llm, tokenizer), (user_llm, None)])
    hllm_module.load_llm_from_config = lambda *a, **k: next(llms)

    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    overrides = {"use_gpu": args.device == "cuda", "show_progress": False}
    if args.item_encode_tokens:
        overrides["item_encode_tokens"] = args.item_encode_tokens
    config = Config(model="HLLM", dataset="ml-100k", config_dict=overrides)
    from recbole.data import data_preparation
    from recbole.trainer import Trainer

    train_data, _, test_data = data_preparation(config, create_dataset(config))
    model = hllm_module.HLLM(config, train_data._dataset).to(args.device)
    if args.texts == "books":
        generator = torch.Generator().manual_seed(0)
        lengths = (torch.randn(model.n_items, generator=generator) * 50 + 200).clamp(
            16, config["max_text_length"]).long().tolist()
        model.item_token_ids = [[]] + [torch.randint(5, vocab, (n,), generator=generator).tolist()
                                       for n in lengths[1:]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batches = [b.to(args.device) for _, b in zip(range(args.steps + 2), train_data)]

    def step(batch):
        loss = model.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    for batch in batches[:2]:
        step(batch)
    tokens = {"item": 0, "user": 0, "item_squares": 0, "user_squares": 0}
    original_encode = model._encode_batch

    def counting_encode(items):
        lengths = [len(model.item_token_ids[i]) + 1 for i in items]
        tokens["item"] += sum(lengths)
        tokens["item_squares"] += sum(n * n for n in lengths)
        return original_encode(items)

    model._encode_batch = counting_encode
    synchronize(args.device)
    start = time.perf_counter()
    for batch in batches[2:]:
        tokens["user"] += int(batch[model.ITEM_SEQ_LEN].sum())
        tokens["user_squares"] += int((batch[model.ITEM_SEQ_LEN] ** 2).sum())
        step(batch)
    synchronize(args.device)
    train_time = time.perf_counter() - start
    model._encode_batch = original_encode
    sequences = sum(len(b) for b in batches[2:])

    model.eval()
    model.item_matrix()  # warm-up
    model._item_matrix = None
    synchronize(args.device)
    start = time.perf_counter()
    model.item_matrix()
    synchronize(args.device)
    item_time = time.perf_counter() - start
    trainer = Trainer(config, model)
    synchronize(args.device)
    start = time.perf_counter()
    trainer.evaluate(test_data, load_best_model=False)
    synchronize(args.device)
    eval_time = time.perf_counter() - start
    n_users = len(test_data._dataset)

    batches_of_items = model.token_budget_batches(list(range(1, model.n_items)))
    real = sum(len(model.item_token_ids[i]) + 1 for b in batches_of_items for i in b)
    padded = sum(len(b) * (max(len(model.item_token_ids[i]) for i in b) + 1) for b in batches_of_items)

    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    params = item_llm.num_parameters() + user_llm.num_parameters()
    packed = model.pack_item_texts or (model.pack_item_texts is None and args.device == "cuda")
    print(f"\nHLLM on ml-100k ({args.texts} texts, mean {real / (model.n_items - 1):.0f} tokens), "
          f"{args.size} Llama x2 ({params / 1e6:.1f}M params in all, fp32 weights, "
          f"{'bf16 autocast' if args.device == 'cuda' else 'fp32'}), {name}, batch "
          f"{config['train_batch_size']}, {config['num_negatives']} negatives, MAX_ITEM_LIST_LENGTH "
          f"{config['MAX_ITEM_LIST_LENGTH']}, item_encode_tokens {model.item_encode_tokens} "
          f"({'packed' if packed else 'padded'})\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| item texts encoded/s (eval, all {model.n_items - 1} items) | {(model.n_items - 1) / item_time:.1f} |")
    print(f"| training sequences/s | {sequences / train_time:.2f} |")
    print(f"| users evaluated/s (full sort, item matrix ready) | {n_users / eval_time:.1f} |")
    print(f"| Item LLM padding fraction (eval batches) | {0 if packed else 1 - real / padded:.3f} |")
    if args.device == "cuda":
        flops = sum(6 * llm.num_parameters() * tokens[name] + 6 * llm.config.num_hidden_layers
                    * llm.config.hidden_size * tokens[f"{name}_squares"]
                    for name, llm in (("item", item_llm), ("user", user_llm)))
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        print(f"| training tokens/s (Item + User LLM) | {(tokens['item'] + tokens['user']) / train_time:,.0f} |")
        if peak:
            print(f"| model FLOPs utilisation (training) | {flops / train_time / (peak * 1e12):.1%} |")
        print(f"| peak memory (GPU allocated) | {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB |")
    else:
        print(f"| peak memory (process RSS) | {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB |")


if __name__ == "__main__":
    main()
