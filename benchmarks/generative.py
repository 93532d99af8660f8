"""Generative recommendation speed (LCRec): users/s of beam search constrained to the trie of item
indices beside unconstrained beam search of the same length and width, users/s of sampled scoring
(each candidate's index log-likelihood), and RQ-VAE training time per 10k items. Prints a markdown
table.

    # CPU, tiny random Llama (2 layers, 64 wide), 20,000 items on 4 levels of 256
    python benchmarks/generative.py
    # LLaMA-7B shape in bf16 on a GPU (LC-Rec's LLM), the same catalogue
    python benchmarks/generative.py --shape 7b --device cuda

Weights are random (built from a config, nothing downloaded): the figures are speeds, not accuracy.
Prompts are random token ids of ``--prompt`` tokens (a quarter of the users ``--prompt`` / 2, left-
padded), codes random and collision-free. The RQ-VAE trains as LCRec trains it (CPU, LC-Rec's
default MLP and codebooks) on Gaussian-mixture embeddings of ``--rqvae-dim`` (LLaMA-7B's hidden size
for LC-Rec; 384 for the offline MiniLM); its set-up (the k-means initialisation) and each further
epoch are timed apart, per 10,000 items, and projected to LC-Rec's 10,000 epochs.
"""

import argparse
import statistics
import time

import torch
from llm_shapes import PAPER_LLAMAS, TINY_LLAMA
from transformers import LlamaConfig, LlamaForCausalLM

from recbole_llmsrec.models.generative.beam_search import (
    code_log_likelihoods,
    constrained_beam_search,
    unconstrained_beam_search,
)
from recbole_llmsrec.models.generative.rqvae import train_rqvae
from recbole_llmsrec.models.generative.trie import IndexTrie

SHAPES = {
    "tiny": {**TINY_LLAMA, "vocab_size": 30522},  # the tiny Llama's BERT tokenizer
    "7b": PAPER_LLAMAS["Llama-2-7B"],  # huggyllama/llama-7b, LC-Rec's
}
RQVAE_DEFAULTS = {  # LCRec.yaml (index/run.sh)
    "seed": 2020,
    "rqvae_codebook_sizes": [256, 256, 256, 256],
    "rqvae_code_size": 32,
    "rqvae_hidden_sizes": [2048, 1024, 512, 256, 128, 64],
    "rqvae_sinkhorn_epsilons": [0.0, 0.0, 0.0, 0.003],
    "rqvae_sinkhorn_iterations": 50,
    "rqvae_beta": 0.25,
    "rqvae_quant_loss_weight": 1.0,
    "rqvae_dropout": 0.0,
    "rqvae_kmeans_iterations": 100,
    "rqvae_batch_size": 1024,
    "rqvae_learning_rate": 0.001,
    "rqvae_weight_decay": 0.0001,
    "rqvae_warmup_epochs": 1,
}
PAPER_RQVAE_EPOCHS = 10000


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--users", type=int, default=64, help="users per search batch")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    parser.add_argument("--candidates", type=int, default=100, help="sampled: candidates per user")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rqvae-items", type=int, default=10000)
    parser.add_argument("--rqvae-dim", type=int, default=None, help="default: the shape's width")
    parser.add_argument("--rqvae-epochs", type=int, default=3, help="epochs timed")
    return parser.parse_args()


def build_llm(args, extra_tokens):
    """A random Llama of ``--shape`` with room for the index tokens, in eval mode (bf16 on CUDA)."""
    shape = dict(SHAPES[args.shape])
    shape["vocab_size"] += extra_tokens
    config = LlamaConfig(**shape, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device(args.device):
        llm = LlamaForCausalLM(config)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    return llm.to(dtype).eval(), config.vocab_size


def catalogue(args, vocabulary):
    """``(trie, level_tokens)`` of ``--items`` random distinct codes; the index tokens are the last
    ``levels x codebook`` ids of the vocabulary."""
    generator = torch.Generator().manual_seed(0)
    space = args.codebook**args.levels
    numbers = torch.randperm(min(space, 1 << 24), generator=generator)[: args.items]
    digits = [(numbers // args.codebook**k) % args.codebook for k in reversed(range(args.levels))]
    codes = torch.cat([torch.full((1, args.levels), -1), torch.stack(digits, 1)])
    first = vocabulary - args.levels * args.codebook
    level_tokens = [
        torch.arange(args.codebook, device=args.device) + first + level * args.codebook
        for level in range(args.levels)
    ]
    trie = IndexTrie(codes, (args.codebook,) * args.levels).to(args.device)
    return trie, level_tokens, codes.to(args.device)


def prompts(args, vocabulary):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, vocabulary - 2000, (args.users, args.prompt), generator=generator)
    mask = torch.ones_like(ids)
    mask[: args.users // 4, : args.prompt // 2] = 0  # a quarter of the users: half as long
    return ids.to(args.device), mask.to(args.device)


def timed(function, args):
    """The median wall time of ``function()`` over ``--repeats`` runs after one warm-up."""
    function()
    times = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rqvae_seconds(args):
    """``(set-up, per epoch, dim)``: seconds of an RQ-VAE training's set-up (model, the k-means
    initialisation of every codebook on the first batch) and of each further epoch over
    ``--rqvae-items`` items, from a 1-epoch training and a (1 + ``--rqvae-epochs``)-epoch one."""
    dim = args.rqvae_dim or SHAPES[args.shape]["hidden_size"]
    generator = torch.Generator().manual_seed(2)
    centres = torch.randn(64, dim, generator=generator)
    which = torch.randint(64, (args.rqvae_items,), generator=generator)
    embeddings = centres[which] + 0.3 * torch.randn(args.rqvae_items, dim, generator=generator)
    seconds = []
    for epochs in (1, 1 + args.rqvae_epochs):
        start = time.perf_counter()
        train_rqvae(embeddings, {**RQVAE_DEFAULTS, "rqvae_epochs": epochs})
        seconds.append(time.perf_counter() - start)
    per_epoch = max(seconds[1] - seconds[0], 0.0) / args.rqvae_epochs
    return seconds[0] - per_epoch, per_epoch, dim


def main():
    args = parse_args()
    llm, vocabulary = build_llm(args, args.levels * args.codebook)
    trie, level_tokens, codes = catalogue(args, vocabulary)
    ids, mask = prompts(args, vocabulary)
    candidates = codes[
        torch.randint(1, args.items + 1, (args.users, args.candidates), device=args.device)
    ]
    with torch.no_grad():
        constrained = timed(
            lambda: constrained_beam_search(llm, ids, mask, trie, level_tokens, args.beams), args
        )
        free = timed(
            lambda: unconstrained_beam_search(llm, ids, mask, args.beams, args.levels), args
        )
        sampled = timed(
            lambda: code_log_likelihoods(llm, ids, mask, candidates, level_tokens), args
        )
    setup, per_epoch, dim = rqvae_seconds(args)
    scale = 10000 / args.rqvae_items
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\n{args.shape} Llama on {device}; {args.items} items, {args.levels} levels of")
    print(f"{args.codebook}; {args.users} users per batch, prompts of {args.prompt} tokens\n")
    print("| measure | value |\n| --- | --- |")
    rate = args.users / constrained
    print(f"| constrained beam search (beams {args.beams}), users/s | {rate:.1f} |")
    print(f"| unconstrained beam search (beams {args.beams}), users/s | {args.users / free:.1f} |")
    print(
        f"| sampled scoring ({args.candidates} candidates), users/s | {args.users / sampled:.1f} |"
    )
    print(
        f"| RQ-VAE set-up (k-means init) per 10k items (dim {dim}, CPU), s | {setup * scale:.2f} |"
    )
    print(f"| RQ-VAE epoch per 10k items (dim {dim}, CPU), s | {per_epoch * scale:.2f} |")
    total = setup + per_epoch * PAPER_RQVAE_EPOCHS
    print(
        f"| RQ-VAE training, {PAPER_RQVAE_EPOCHS} epochs per 10k items (projected), min | "
        f"{total * scale / 60:.0f} |"
    )


if __name__ == "__main__":
    main()
