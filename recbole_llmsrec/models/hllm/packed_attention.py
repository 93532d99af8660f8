"""Packed (variable-length) attention for HLLM's Item LLM: texts end to end in one row, without
padding, each causal and apart (README "HLLM"); varlen flash attention on CUDA in half precision,
SDPA with the same block-diagonal mask elsewhere (the tests' reference)."""

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

PACKED_ATTENTION = "recbole_llmsrec_packed"


def packed_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    cu_seq_lens_q=None,
    max_length_q=None,
    **kwargs,
):
    """Attention over texts packed in one row (``cu_seq_lens_q``: int32 boundaries): causal (unless
    ``module.is_causal`` is false) within each text, nothing across. CUDA bf16/fp16 (weights or
    autocast): ``varlen_attn``; else SDPA with the same block-diagonal mask (the tests' reference).
    Without boundaries (a padded batch): transformers' SDPA. No attention dropout when packed (Llama
    configs have none)."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    grouped, causal = key.shape[1] != query.shape[1], getattr(module, "is_causal", True)
    # flash is half precision only: under autocast RoPE gives fp32 q/k; cast them (as
    # transformers' flash attention does)
    half = (
        query.dtype
        if query.dtype in (torch.float16, torch.bfloat16)
        else (torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None)
    )
    if query.is_cuda and half is not None:
        out = _varlen_flash(query, key, value, half, cu_seq_lens_q, max_length_q, scaling, causal)
    else:
        text = torch.repeat_interleave(
            torch.arange(len(cu_seq_lens_q) - 1, device=query.device), cu_seq_lens_q.diff()
        )
        allowed = text[:, None] == text[None]
        allowed = allowed.tril() if causal else allowed
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value.to(query.dtype), attn_mask=allowed, scale=scaling, enable_gqa=grouped
        )[0].transpose(0, 1)
    return out.unsqueeze(0), None


def _varlen_flash(query, key, value, half, boundaries, max_length, scaling, causal):
    """torch's ``varlen_attn`` (flash) on packed texts, in the half precision ``half``."""
    from torch.nn.attention.varlen import varlen_attn  # CUDA builds only: imported where used

    q, k, v = (x[0].transpose(0, 1).to(half) for x in (query, key, value))  # [tokens, heads, dim]
    return varlen_attn(
        q,
        k,
        v,
        boundaries,
        boundaries,
        max_length,
        max_length,
        scale=scaling,
        window_size=(-1, 0 if causal else -1),
        enable_gqa=key.shape[1] != query.shape[1],
    )


def use_packed_attention(model):
    """Let ``model`` run packed forwards (``packed_attention``); padded ones keep SDPA and its
    masks."""
    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    # packed forwards pass no attention mask: the boundaries replace it
    ALL_MASK_ATTENTION_FUNCTIONS.register(
        PACKED_ATTENTION, lambda **kw: None if kw.get("attention_mask") is None else sdpa_mask(**kw)
    )
    model.set_attn_implementation(PACKED_ATTENTION)
    return model


def packed_forward(model, embeds, lengths):
    """Hidden states ``[sum(lengths), D]`` of texts whose input embeddings ``embeds [sum(lengths),
    D]`` are packed end to end (``lengths`` a list); each text's positions start at 0, as when
    padded."""
    cu = (
        torch.tensor([0, *lengths], dtype=torch.int32)
        .cumsum(0, dtype=torch.int32)
        .to(embeds.device)
    )
    positions = torch.cat([torch.arange(n) for n in lengths]).to(embeds.device)
    return model(
        inputs_embeds=embeds.unsqueeze(0),
        position_ids=positions.unsqueeze(0),
        cu_seq_lens_q=cu,
        cu_seq_lens_k=cu,
        max_length_q=max(lengths),
        max_length_k=max(lengths),
    ).last_hidden_state[0]
