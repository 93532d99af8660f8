"""A-LLMRec throughput and memory on ml-100k: stage-1 and stage-2 training samples/s, users ranked per
second (uni19: 20 candidates scored by LLM log-likelihood; full sort: stage-1 retrieval + LLM rerank of
the top ``rerank_k``), beside the original's protocol on the same prompts (a greedy answer of
``--answer-tokens`` tokens per user, ``generate_answer``), and peak memory. Ranking is measured with
ml-100k's titles and with Amazon-like titles (random words, ~700-token prompts as on Movies_and_TV).
Prints a markdown table.

    python benchmarks/allmrec.py                          # CPU, tiny random OPT + tiny text encoder
    python benchmarks/allmrec.py --size 6.7b --device cuda   # OPT-6.7B shape, bf16, DistilBERT-base shape

Weights are random (built from configs, nothing downloaded); the SASRec teacher is untrained: the figures
are speeds, not accuracy. The models are handed over in place of ``llm_path``/``text_encoder_path``.
"""

import argparse
import resource
import sys
import time

import torch

import recbole_llmsrec.model.allmrec as allmrec_module
from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.llm import enable_gradient_checkpointing, freeze, without_dropout

LLM_SHAPES = {  # OPTConfig keyword arguments
    "tiny": dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                 word_embed_proj_dim=64),
    "6.7b": dict(hidden_size=4096, ffn_dim=16384, num_hidden_layers=32, num_attention_heads=32,
                 word_embed_proj_dim=4096, vocab_size=50272),     # facebook/opt-6.7b
}
ENCODER_SHAPES = {  # DistilBertConfig keyword arguments
    "tiny": dict(dim=64, hidden_dim=128, n_layers=2, n_heads=4),
    "6.7b": dict(dim=768, hidden_dim=3072, n_layers=6, n_heads=12),  # nq-distilbert-base-v1
}


def build(size, tokenizer_path, device, dtype, gradient_checkpointing):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel, OPTConfig, OPTForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    shape = {"vocab_size": len(tokenizer), "max_position_embeddings": 2048, **LLM_SHAPES[size]}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        llm = OPTForCausalLM(without_dropout(OPTConfig(**shape)))   # as load_llm's frozen=True
    torch.set_default_dtype(previous)
    if gradient_checkpointing:
        enable_gradient_checkpointing(llm)
    with torch.device(device):
        encoder = DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), **ENCODER_SHAPES[size]))
    return freeze(llm), encoder, tokenizer


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def rate(device, count, fn, warmup):
    warmup()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(LLM_SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: offline MiniLM)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per stage")
    parser.add_argument("--users", type=int, default=20, help="users ranked per evaluation mode")
    parser.add_argument("--answer-tokens", type=int, default=6, help="greedy answer length (original)")
    parser.add_argument("--amazon-title-words", type=int, default=14,
                        help="words per synthetic Amazon-like title")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing in the LLM (off by default, as in the model)")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if args.tokenizer is None:
        from recbole_llmsrec.tools.tiny_llm import default_tokenizer_path
        args.tokenizer = default_tokenizer_path()
    checkpointing = args.checkpointing
    llm, encoder, tokenizer = build(args.size, args.tokenizer, args.device, dtype, checkpointing)
    allmrec_module.load_llm_from_config = lambda config, **options: (llm, tokenizer)
    allmrec_module.load_llm = lambda *a, **k: (encoder, tokenizer)

    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    config = Config(model="ALLMRec", dataset="ml-100k", config_dict={
        "use_gpu": args.device == "cuda", "show_progress": False,
        "llm_gradient_checkpointing": checkpointing})
    from recbole.data import data_preparation

    train_data, _, test_data = data_preparation(config, create_dataset(config))
    model = allmrec_module.ALLMRec(config, train_data._dataset).to(args.device)
    model.stage_done[0] = True
    rows = train_data._dataset.inter_feat

    def batches(size, count, offset=0):
        return [rows[torch.arange(offset + i * size, offset + (i + 1) * size)].to(args.device)
                for i in range(count)]

    def train(loss_fn, optimizer, data):
        for batch in data:
            loss = loss_fn(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    model.prepare_stage1()
    model.train()
    stage1_size = config["stage1_batch_size"]
    optimizer = torch.optim.Adam(model.stage1_parameters(), lr=1e-4)
    stage1_rate = rate(args.device, stage1_size * args.steps,
                       lambda: train(model.stage1_loss, optimizer, batches(stage1_size, args.steps, 64)),
                       lambda: train(model.stage1_loss, optimizer, batches(stage1_size, 2)))
    model.finish_stage1()

    stage2_size = config["train_batch_size"]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    stage2_rate = rate(args.device, stage2_size * args.steps,
                       lambda: train(model.calculate_loss, optimizer, batches(stage2_size, args.steps, 8)),
                       lambda: train(model.calculate_loss, optimizer, batches(stage2_size, 2)))

    model.eval()
    test_rows = test_data._dataset.inter_feat
    users = test_rows[torch.arange(args.users)].to(args.device)
    generator = torch.Generator().manual_seed(0)
    candidates = [torch.randint(1, model.n_items, (20,), generator=generator).tolist()
                  for _ in range(args.users)]
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 3]
    amazon_titles = [" ".join(words[i] for i in torch.randint(len(words), (args.amazon_title_words,),
                                                             generator=generator).tolist())
                     for _ in model.titles]
    ranking = {}
    for titles_name, titles in (("ml-100k", list(model.titles)), ("Amazon-like", amazon_titles)):
        model.titles, model._title_token_cache = titles, {}
        prompt_tokens = sum(len(model._prompt_ids(model._history(users[[i]])[0], c))
                            for i, c in enumerate(candidates)) / args.users
        uni19 = rate(args.device, args.users, lambda: model.llm_scores(users, candidates),
                     lambda: model.llm_scores(users, candidates))   # steady state: titles tokenized
        with torch.no_grad():
            full = rate(args.device, args.users, lambda: model.full_sort_predict(users),
                        lambda: model.full_sort_predict(users))
        greedy = lambda count: [model.generate_answer(users[[i]], model.candidate_order(candidates[i]),
                                                      args.answer_tokens) for i in range(count)]
        original = rate(args.device, args.users, lambda: greedy(args.users), lambda: greedy(2))
        ranking[titles_name] = (prompt_tokens, uni19, full, original)

    peak = (torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"\nALLMRec on ml-100k, {args.size} OPT ({llm.num_parameters() / 1e6:.1f}M params, "
          f"{str(dtype).replace('torch.', '')}), text encoder {encoder.num_parameters() / 1e6:.1f}M, "
          f"{name}, gradient checkpointing {checkpointing}\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| stage 1 training samples/s (batch {stage1_size}) | {stage1_rate:.1f} |")
    print(f"| stage 2 training samples/s (batch {stage2_size}) | {stage2_rate:.1f} |")
    for titles_name, (prompt_tokens, uni19, full, original) in ranking.items():
        where = f"{titles_name} titles, {prompt_tokens:.0f}-token prompts"
        print(f"| users ranked/s, uni19 (20 candidates), {where} | {uni19:.2f} |")
        print(f"| users ranked/s, full sort (rerank top {model.rerank_k}), {where} | {full:.2f} |")
        print(f"| users answered/s, original greedy {args.answer_tokens}-token answer, {where} | "
              f"{original:.2f} |")
    print(f"| peak memory ({'GPU allocated' if args.device == 'cuda' else 'process RSS'}) | {peak:.2f} GiB |")


if __name__ == "__main__":
    main()
