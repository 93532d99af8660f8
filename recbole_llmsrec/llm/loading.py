"""Loading LLMs and text encoders: ``load_llm``; ``load_llm_from_config`` reads one slot's keys
(``llm_*``; HLLM's ``item_llm_*``, ``user_llm_*``): ``_path`` (hub id or ``save_pretrained`` dir),
``_dtype``, ``_lora`` (peft), ``_gradient_checkpointing``, and ``trust_remote_code`` (off:
checkpoint code never runs). ``kind="causal_lm"`` has the LM head; ``kind="base"`` is the bare
transformer (no vocabulary logits)."""

import inspect
import logging
import os
import re

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
KINDS = {"causal_lm": AutoModelForCausalLM, "base": AutoModel}


class LLMLoadError(ValueError):
    """A model path that cannot be loaded; the message names the config key and the fix."""


class ExpectedHeadReportFilter(logging.Filter):
    """Drops transformers' load report if all it lists is the LM head left UNEXPECTED
    (``kind="base"`` skips it on purpose); any other row (e.g. a MISSING, randomly initialised
    weight) keeps it."""

    def filter(self, record):
        message = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
        if "LOAD REPORT" not in message:
            return True
        rows = [
            [cell.strip() for cell in line.split("|")]
            for line in message.splitlines()
            if "|" in line and not line.startswith("Key")
        ]
        return not rows or not all(
            r[0].startswith("lm_head.") and r[1] == "UNEXPECTED" for r in rows
        )


_HEAD_REPORT_FILTER = ExpectedHeadReportFilter()


def _quiet_expected_head_report():
    """Install ``ExpectedHeadReportFilter`` on transformers' loading logger (once; a filter already
    there is not added again)."""
    logging.getLogger("transformers.modeling_utils").addFilter(_HEAD_REPORT_FILTER)


def resolve_dtype(name, key="llm_dtype"):
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"{key}={name!r} is not supported: use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def _looks_local(path):
    # a hub id is "name" or "org/name"; anything else is meant as a directory on disk
    return os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1


def _load_error(path, key, reason):
    name = os.path.basename(path.rstrip("/")) or "model"
    return LLMLoadError(
        f"{key}={path!r} could not be loaded: {reason}. Point {key} at a local copy: "
        f"download it once on a machine with internet (e.g. `hf download {path} --local-dir "
        f"/models/{name}`), then set `{key}: /models/{name}` in your YAML or pass "
        f"--{key}=/models/{name}."
    )


def _check_path(path, key):
    if not isinstance(path, str) or not path:
        raise LLMLoadError(
            f"{key} is not set: give a Hugging Face hub id or a local model directory."
        )
    expanded = os.path.expanduser(path)
    if _looks_local(path) and not os.path.isdir(expanded):
        raise LLMLoadError(
            f"{key}={path!r}: the local directory {os.path.abspath(expanded)} does not exist. "
            f"Point {key} "
            f"at a directory written by save_pretrained (`{key}: DIR` in your YAML or "
            f"--{key}=DIR). The "
            "offline profiles' tiny random models are built with `python -m "
            "recbole_llmsrec.tools.tiny_llm "
            f"{path}` (add `--architecture opt` for an OPT, `--text-encoder DIR` for the MiniLM "
            "encoder)."
        )
    if os.path.isdir(expanded):
        return expanded
    _check_hub(path, key)
    return path


HUB_PROBE_SECONDS = (
    10  # one look at the hub before transformers' own retries (five, each warned twice)
)


def _check_hub(repo, key):
    """A hub id that is neither in the local cache nor reachable on the hub is an ``LLMLoadError``
    after one short request, not after transformers' retries; skipped offline (``HF_HUB_OFFLINE``),
    where transformers itself fails at once."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return
    try:
        HfApi().model_info(repo, timeout=HUB_PROBE_SECONDS)
    except Exception as error:  # noqa: BLE001 -- unreachable, unknown, gated: all mean "cannot load it"
        raise _load_error(
            repo,
            key,
            f"the Hugging Face hub did not serve it "
            f"({type(error).__name__}: {str(error).splitlines()[0][:160]})",
        ) from None


def load_tokenizer(path, key="llm_path", trust_remote_code=False):
    source = _check_path(path, key)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _load_error(path, key, str(err).splitlines()[0]) from err


def load_llm(
    path,
    kind="causal_lm",
    dtype="bfloat16",
    lora=None,
    gradient_checkpointing=False,
    trust_remote_code=False,
    key="llm_path",
    with_tokenizer=True,
    frozen=False,
):
    """``(model, tokenizer)`` (tokenizer None unless ``with_tokenizer``); a ``lora`` dict wraps it
    with peft. ``frozen=True`` (never trains): every dropout of its config at 0
    (``without_dropout``), then ``freeze``. Eval mode alone is not enough: HF checkpoints only
    modules in train mode, so with gradient checkpointing a frozen LLM runs in train mode (OPT's
    dropout is 0.1)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {sorted(KINDS)}.")
    source = _check_path(path, key)
    _quiet_expected_head_report()
    torch_dtype = resolve_dtype(dtype, key.replace("_path", "_dtype"))
    try:
        options = (
            {
                "config": without_dropout(
                    AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
                )
            }
            if frozen
            else {}
        )
        model = KINDS[kind].from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **options
        )
    except (OSError, ValueError) as err:
        raise _load_error(path, key, str(err).splitlines()[0]) from err
    tokenizer = load_tokenizer(path, key, trust_remote_code) if with_tokenizer else None
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if lora:
        model = apply_lora(model, lora, key.replace("_path", "_lora"), gradient_checkpointing)
    if frozen:
        freeze(model)
    return model, tokenizer


def without_dropout(config):
    """``config`` (changed in place) with every float "dropout"/"layerdrop" attribute at 0.0, nested
    too."""
    for name, value in list(vars(config).items()):
        if isinstance(value, float) and ("dropout" in name or "layerdrop" in name):
            setattr(config, name, 0.0)
        elif isinstance(value, PretrainedConfig):  # e.g. the text_config of a multimodal model
            without_dropout(value)
    return config


def apply_lora(model, lora, key="llm_lora", gradient_checkpointing=False, modules_to_save=None):
    """``model`` wrapped by peft's LoRA (``lora``: r, alpha, dropout, target_modules);
    ``modules_to_save``: module names trained in full beside the adapters (LC-Rec's embeddings and
    head, which hold its new index tokens)."""
    from peft import LoraConfig, get_peft_model

    unknown = set(lora) - {"r", "alpha", "dropout", "target_modules"}
    if unknown:
        raise ValueError(
            f"{key} has unknown entries {sorted(unknown)}: use r, alpha, dropout, target_modules."
        )
    if gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would cut the checkpointed graph
    return get_peft_model(
        model,
        LoraConfig(
            r=lora.get("r", 8),
            lora_alpha=lora.get("alpha", 16),
            bias="none",
            lora_dropout=lora.get("dropout", 0.0),
            target_modules=lora.get("target_modules"),
            modules_to_save=modules_to_save,
        ),
    )


def load_llm_from_config(config, prefix="llm", kind="causal_lm", with_tokenizer=True, frozen=False):
    """``load_llm`` with the ``<prefix>_*`` keys of ``config`` (see the module docstring)."""
    return load_llm(
        config[f"{prefix}_path"],
        kind=kind,
        dtype=config[f"{prefix}_dtype"],
        lora=config[f"{prefix}_lora"],
        gradient_checkpointing=bool(config[f"{prefix}_gradient_checkpointing"]),
        trust_remote_code=bool(config["trust_remote_code"]),
        key=f"{prefix}_path",
        with_tokenizer=with_tokenizer,
        frozen=frozen,
    )


def context_length(model, tokenizer):
    """The longest prompt ``model`` takes, in tokens: its ``max_position_embeddings`` and the
    tokenizer's ``model_max_length``, the smaller (transformers' sentinel for "no limit"
    ignored)."""
    limits = [
        getattr(model.config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    limits = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 10**9]
    return min(limits) if limits else 10**9


def cache_keyword(model):
    """The name of the KV-cache argument (and output field) of ``model``'s forward: ``cache`` from
    transformers 5.x on (``past_key_values`` is deprecated there and removed in 5.40), else
    ``past_key_values``; the plugin allows both (``transformers>=4.56``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def attention_kernels():
    """SDPA on the flash, memory-efficient or math kernels, not cuDNN's, whose plan is rebuilt for
    every new sequence length (with ragged prompts nearly every batch; on an H100 that dominated the
    step time)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )


def enable_gradient_checkpointing(model):
    """HF gradient checkpointing recomputing on the forward's ``attention_kernels``: otherwise the
    recomputed layer saves other tensors and torch refuses the backward."""
    options = {
        "use_reentrant": False,
        "context_fn": lambda: (attention_kernels(), attention_kernels()),
    }
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def uses_gradient_checkpointing(model):
    """Whether HF gradient checkpointing is on in ``model`` (the flag is on an inner module: the
    decoder)."""
    return any(
        getattr(module, "gradient_checkpointing", False) is True for module in model.modules()
    )


@torch.no_grad()
def require_causal(model, key):
    """Refuse a model whose attention is not causal (an encoder such as BERT or MiniLM) where a
    decoder-only LM is needed: changing the last of three tokens must leave the first one's
    state."""
    base = getattr(model, "base_model", model)
    ids = torch.tensor([[1, 2, 3], [1, 2, 4]], device=next(model.parameters()).device)
    first = base(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0].float()
    if not torch.allclose(first[0], first[1], atol=1e-4, rtol=1e-3):
        raise LLMLoadError(
            f"{key}={model.name_or_path!r} is not a causal (decoder-only) language model: "
            f"its attention looks ahead ({type(model).__name__}). Use a decoder such as "
            "Llama or OPT here."
        )
    return model


def freeze(module):
    """Stop gradients into ``module`` and put it in eval mode (no dropout); returns it."""
    module.requires_grad_(False)
    return module.eval()


def mean_pooled(model, tokenizer, texts, max_length):
    """Sentence-BERT embeddings: the attention-masked mean of the last hidden states (with grad)."""
    device = next(model.parameters()).device
    batch = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    ).to(device)
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.no_grad()
def mean_pooled_embeddings(model, tokenizer, texts, max_length):
    """``mean_pooled`` without grad, for a frozen encoder."""
    return mean_pooled(model, tokenizer, texts, max_length)


class FrozenLLMNotSaved:
    """Mixin for a model with a frozen ``self.llm`` (loaded from ``llm_path``): checkpoints leave it
    out (a 3B LLM adds 6 GB) and ``load_state_dict`` does not expect it; ``unsaved_prefixes`` may
    add other submodules that are rebuilt rather than restored."""

    unsaved_prefixes = ("llm.",)

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        state = super().state_dict(
            *args, destination=destination, prefix=prefix, keep_vars=keep_vars
        )
        unsaved = tuple(prefix + name for name in self.unsaved_prefixes)
        for key in [k for k in state if k.startswith(unsaved)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(self.unsaved_prefixes)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {result.unexpected_keys}"
            )
        return result._replace(missing_keys=missing)
