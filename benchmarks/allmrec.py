"""A-LLMRec throughput and memory on ml-100k: stage-1 and stage-2 training samples/s, users ranked
per second (uni19: 20 candidates scored by LLM log-likelihood; full sort: stage-1 retrieval + LLM
rerank of the top ``rerank_k``), beside the original's protocol on the same prompts (a greedy answer
of ``--answer-tokens`` tokens per user, ``generate_answer``), and peak memory. Ranking is measured
with ml-100k's titles and with Amazon-like titles (random words, ~700-token prompts as on
Movies_and_TV). Prints a markdown table.

    # CPU, tiny random OPT + tiny text encoder
    python benchmarks/allmrec.py
    # OPT-6.7B shape, bf16, DistilBERT-base shape
    python benchmarks/allmrec.py --size 6.7b --device cuda

Weights are random (built from configs, nothing downloaded); the SASRec teacher is untrained: the
figures are speeds, not accuracy. The models are handed over in place of
``llm_path``/``text_encoder_path``.
"""

import argparse
import resource
import sys
import time

import torch

import recbole_llmsrec.models.allmrec.stage1 as stage1_module
import recbole_llmsrec.models.cf_teacher.model as cf_teacher_model
from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.llm.loading import enable_gradient_checkpointing, freeze, without_dropout
from recbole_llmsrec.models.allmrec.model import ALLMRec

LLM_SHAPES = {  # OPTConfig keyword arguments
    "tiny": dict(
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
    ),
    # facebook/opt-6.7b
    "6.7b": dict(
        hidden_size=4096,
        ffn_dim=16384,
        num_hidden_layers=32,
        num_attention_heads=32,
        word_embed_proj_dim=4096,
        vocab_size=50272,
    ),
}
ENCODER_SHAPES = {  # DistilBertConfig keyword arguments
    "tiny": dict(dim=64, hidden_dim=128, n_layers=2, n_heads=4),
    "6.7b": dict(dim=768, hidden_dim=3072, n_layers=6, n_heads=12),  # nq-distilbert-base-v1
}
CANDIDATES = 20  # uni19: the target and 19 negatives


def parse_args():
    """The command line; fills in the tokenizer when it is left out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(LLM_SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: offline MiniLM)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per stage")
    parser.add_argument("--users", type=int, default=20, help="users ranked per evaluation mode")
    parser.add_argument(
        "--answer-tokens", type=int, default=6, help="greedy answer length (original)"
    )
    parser.add_argument(
        "--amazon-title-words", type=int, default=14, help="words per synthetic Amazon-like title"
    )
    parser.add_argument(
        "--checkpointing",
        action="store_true",
        help="gradient checkpointing in the LLM (off by default, as in the model)",
    )
    args = parser.parse_args()
    if args.tokenizer is None:
        from recbole_llmsrec.tools.tiny_llm import default_tokenizer_path

        args.tokenizer = default_tokenizer_path()
    return args


def build(size, tokenizer_path, device, dtype, gradient_checkpointing):
    """``(frozen OPT, text encoder, tokenizer)``: random weights of shape ``size``."""
    from transformers import (
        AutoTokenizer,
        DistilBertConfig,
        DistilBertModel,
        OPTConfig,
        OPTForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    shape = {"vocab_size": len(tokenizer), "max_position_embeddings": 2048, **LLM_SHAPES[size]}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        llm = OPTForCausalLM(without_dropout(OPTConfig(**shape)))  # as load_llm's frozen=True
    torch.set_default_dtype(previous)
    if gradient_checkpointing:
        enable_gradient_checkpointing(llm)
    with torch.device(device):
        encoder = DistilBertModel(
            DistilBertConfig(vocab_size=len(tokenizer), **ENCODER_SHAPES[size])
        )
    return freeze(llm), encoder, tokenizer


def build_model(args, llm, encoder, tokenizer):
    """``(config, model, train loader, test loader)``: ALLMRec on ml-100k with ``llm`` and
    ``encoder`` handed in place of ``llm_path``/``text_encoder_path`` loading, its (untrained)
    teacher marked ready."""
    cf_teacher_model.load_llm_from_config = lambda config, **options: (llm, tokenizer)
    stage1_module.load_llm = lambda *a, **k: (encoder, tokenizer)
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    config = Config(
        model="ALLMRec",
        dataset="ml-100k",
        config_dict={
            "use_gpu": args.device == "cuda",
            "show_progress": False,
            "llm_gradient_checkpointing": args.checkpointing,
        },
    )
    from recbole.data import data_preparation

    train_data, _, test_data = data_preparation(config, create_dataset(config))
    model = ALLMRec(config, train_data._dataset).to(args.device)
    model.mark_cf_teacher_ready()
    return config, model, train_data, test_data


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def rate(device, count, fn, warmup):
    """``count`` per second of ``fn()``, timed after ``warmup()``."""
    warmup()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return count / (time.perf_counter() - start)


def peak_memory_gib(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train(loss_fn, optimizer, data):
    for batch in data:
        loss = loss_fn(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def training_rates(args, config, model, train_data):
    """Samples/s of stage 1 and of stage 2 training: ``--steps`` timed steps each, after two."""
    rows = train_data._dataset.inter_feat

    def batches(size, count, offset=0):
        return [
            rows[torch.arange(offset + i * size, offset + (i + 1) * size)].to(args.device)
            for i in range(count)
        ]

    def stage_rate(loss_fn, optimizer, size, offset):
        return rate(
            args.device,
            size * args.steps,
            lambda: train(loss_fn, optimizer, batches(size, args.steps, offset)),
            lambda: train(loss_fn, optimizer, batches(size, 2)),
        )

    model.prepare_stage1()
    model.train()
    optimizer = torch.optim.Adam(model.stage1_parameters(), lr=1e-4)
    stage1 = stage_rate(model.stage1_loss, optimizer, config["stage1_batch_size"], 64)
    model.finish_stage1()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    stage2 = stage_rate(model.calculate_loss, optimizer, config["train_batch_size"], 8)
    return stage1, stage2


def amazon_like_titles(tokenizer, count, words_per_title, generator):
    """``count`` titles of ``words_per_title`` random alphabetic vocabulary words each."""
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 3]
    return [
        " ".join(
            words[i]
            for i in torch.randint(len(words), (words_per_title,), generator=generator).tolist()
        )
        for _ in range(count)
    ]


def ranking_rates(args, model, users, candidates):
    """``(mean prompt tokens, uni19 users/s, full sort users/s, greedy answers/s)`` with the
    model's current titles, in steady state (titles tokenized by the warm-up)."""
    prompt_tokens = (
        sum(
            len(model._prompt_ids(model._history(users[[i]])[0], c))
            for i, c in enumerate(candidates)
        )
        / args.users
    )
    uni19 = rate(
        args.device,
        args.users,
        lambda: model.llm_scores(users, candidates),
        lambda: model.llm_scores(users, candidates),
    )
    with torch.no_grad():
        full = rate(
            args.device,
            args.users,
            lambda: model.full_sort_predict(users),
            lambda: model.full_sort_predict(users),
        )

    def greedy(count):
        return [
            model.generate_answer(
                users[[i]], model.candidate_order(candidates[i]), args.answer_tokens
            )
            for i in range(count)
        ]

    original = rate(args.device, args.users, lambda: greedy(args.users), lambda: greedy(2))
    return prompt_tokens, uni19, full, original


def measure_ranking(args, model, test_data):
    """``{titles name: ranking_rates}`` for ml-100k's titles and for Amazon-like titles, on the
    first ``--users`` test users, each with 20 seeded random candidates."""
    model.eval()
    test_rows = test_data._dataset.inter_feat
    users = test_rows[torch.arange(args.users)].to(args.device)
    generator = torch.Generator().manual_seed(0)
    candidates = [
        torch.randint(1, model.n_items, (CANDIDATES,), generator=generator).tolist()
        for _ in range(args.users)
    ]
    amazon_titles = amazon_like_titles(
        model.tokenizer, len(model.titles), args.amazon_title_words, generator
    )
    ranking = {}
    for titles_name, titles in (("ml-100k", list(model.titles)), ("Amazon-like", amazon_titles)):
        model.titles, model._title_token_cache = titles, {}
        ranking[titles_name] = ranking_rates(args, model, users, candidates)
    return ranking


def print_table(args, config, model, encoder, stage_rates, ranking):
    """The markdown table of the training rates, the ranking rates and the peak memory."""
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    dtype = str(model.llm.dtype).replace("torch.", "")
    print(
        f"\nALLMRec on ml-100k, {args.size} OPT ({model.llm.num_parameters() / 1e6:.1f}M params, "
        f"{dtype}), text encoder {encoder.num_parameters() / 1e6:.1f}M, "
        f"{name}, gradient checkpointing {args.checkpointing}\n"
    )
    print("| measure | value |\n| --- | --- |")
    stage1_size, stage2_size = config["stage1_batch_size"], config["train_batch_size"]
    print(f"| stage 1 training samples/s (batch {stage1_size}) | {stage_rates[0]:.1f} |")
    print(f"| stage 2 training samples/s (batch {stage2_size}) | {stage_rates[1]:.1f} |")
    for titles_name, (prompt_tokens, uni19, full, original) in ranking.items():
        where = f"{titles_name} titles, {prompt_tokens:.0f}-token prompts"
        print(f"| users ranked/s, uni19 (20 candidates), {where} | {uni19:.2f} |")
        print(f"| users ranked/s, full sort (rerank top {model.rerank_k}), {where} | {full:.2f} |")
        print(
            f"| users answered/s, original greedy {args.answer_tokens}-token answer, {where} | "
            f"{original:.2f} |"
        )
    print(
        f"| peak memory ({'GPU allocated' if args.device == 'cuda' else 'process RSS'}) | "
        f"{peak_memory_gib(args.device):.2f} GiB |"
    )


def main():
    args = parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    llm, encoder, tokenizer = build(
        args.size, args.tokenizer, args.device, dtype, args.checkpointing
    )
    config, model, train_data, test_data = build_model(args, llm, encoder, tokenizer)
    stage_rates = training_rates(args, config, model, train_data)
    ranking = measure_ranking(args, model, test_data)
    print_table(args, config, model, encoder, stage_rates, ranking)


if __name__ == "__main__":
    main()
