"""Memory per GPU for parameters, gradients and optimizer states, per model size and strategy
(README "Multi-GPU and multi-node"). Computed, not measured: the models are built on the meta device
from the papers' LLM shapes (no weights, no GPU), and their parameters counted.

    python benchmarks/distributed_memory.py

Bytes: a trained fp32 parameter costs 4 (weight) + 4 (gradient) + 8 (AdamW moments) = 16 B, sharded
over the GPUs under FSDP; a frozen parameter costs its dtype's size on every GPU (frozen LLMs of
LLMSRec/ALLMRec load in bf16; HLLM's frozen User-LLM token table stays fp32, replicated under FSDP).
Activations come on top and depend on batch, text length and gradient checkpointing.
"""

import torch
from llm_shapes import PAPER_LLAMAS
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, LlamaConfig, OPTConfig

from recbole_llmsrec.llm.layers import projection_mlp

SHAPES = {  # the LLM shapes of the papers' defaults
    **{name: LlamaConfig(**shape) for name, shape in PAPER_LLAMAS.items()},
    "OPT-6.7B": OPTConfig(
        hidden_size=4096,
        ffn_dim=16384,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=50272,
        max_position_embeddings=2048,
        word_embed_proj_dim=4096,
    ),
}
TRAINED, BF16, FP32 = 16, 2, 4


def count(module):
    return sum(p.numel() for p in module.parameters())


def llm(shape, causal_lm=False):
    with torch.device("meta"):
        return (AutoModelForCausalLM if causal_lm else AutoModel).from_config(SHAPES[shape])


def hllm(shape):
    """Both LLMs train except the User LLM's token table (it reads item embeddings, never
    tokens)."""
    item, user = llm(shape), llm(shape)
    table = user.get_input_embeddings().weight.numel()
    return count(item) + count(user) - table, {FP32: table}


def llmsrec():
    """Frozen Llama-3.2-3B; trained: LLMSRec's four MLPs (defaults: teacher d=64, MLP 2048, repr
    128) and its two [UserOut]/[ItemOut] vectors."""
    frozen, size = llm("Llama-3.2-3B"), SHAPES["Llama-3.2-3B"].hidden_size
    with torch.device("meta"):
        mlps = [
            projection_mlp(64, size, size, nn.LeakyReLU()),
            projection_mlp(size, 2048, 128, nn.LeakyReLU()),
            projection_mlp(size, 2048, 128, nn.LeakyReLU()),
            projection_mlp(64, 128, 128, nn.GELU()),
        ]
    return sum(map(count, mlps)) + 2 * size, {BF16: count(frozen)}


def allmrec():
    """Frozen OPT-6.7B (with its LM head); trained in stage 2: the user and item projectors (teacher
    d=50, alignment 128)."""
    frozen, size = llm("OPT-6.7B", causal_lm=True), SHAPES["OPT-6.7B"].hidden_size
    with torch.device("meta"):
        mlps = [
            projection_mlp(50, size, size, nn.LeakyReLU()),
            projection_mlp(128, size, size, nn.GELU()),
        ]
    return sum(map(count, mlps)), {BF16: count(frozen)}


def gigabytes(trained, frozen, gpus):
    return (TRAINED * trained / gpus + sum(size * n for size, n in frozen.items())) / 1e9


def main():
    rows = [
        ("LLMSRec (Llama-3.2-3B)", *llmsrec(), False),
        ("ALLMRec (OPT-6.7B), stage 2", *allmrec(), False),
        ("HLLM-1B (TinyLlama-1.1B x2)", *hllm("TinyLlama-1.1B"), True),
        ("HLLM-7B (Llama-2-7B x2)", *hllm("Llama-2-7B"), True),
    ]
    print(
        "| model (LLM size) | trained / frozen parameters | one GPU or DDP, per GPU | "
        "FSDP on 8 GPUs, per GPU | FSDP on 16 GPUs, per GPU |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, trained, frozen, fsdp in rows:
        shard = [
            f"{gigabytes(trained, frozen, n):.1f} GB" if fsdp else "refused: use DDP"
            for n in (8, 16)
        ]
        print(
            f"| {name} | {trained / 1e9:.3g} B / {sum(frozen.values()) / 1e9:.3g} B | "
            f"{gigabytes(trained, frozen, 1):.1f} GB | {shard[0]} | {shard[1]} |"
        )


if __name__ == "__main__":
    main()
