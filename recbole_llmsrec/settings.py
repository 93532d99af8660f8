"""Every config key this plugin adds, in one schema: type, allowed values, default and meaning.

``check_settings`` runs once, when a ``Config`` is built (before any data is loaded), for RecBole's models
and the plugin's alike, and refuses a value with the key, the value and what is allowed. A key that is
absent (``None``; RecBole's own models never read the plugin's YAMLs) means its default. The YAML comments
and the README's config table are tested against this schema (``tests/test_settings.py``); the defaults
of ``properties/overall.yaml`` are the schema's, a model's YAML may override them for that model.
"""

import math
from dataclasses import dataclass

PLUGIN_MODELS = ("LLMSRec", "ALLMRec", "HLLM")
DTYPES = ("bfloat16", "float16", "float32")
LORA_ENTRIES = ("r", "alpha", "dropout", "target_modules")


@dataclass(frozen=True)
class Setting:
    """One key: ``kind`` is int, float, bool, str, list or dict; ``low``/``high`` bound a number
    (``open_low``: strictly above ``low``); ``choices`` lists the allowed values; ``models`` the plugin
    models it applies to (``None``: every model run through the plugin)."""

    name: str
    kind: str
    default: object
    meaning: str
    low: float = None
    high: float = None
    open_low: bool = False
    choices: tuple = None
    models: tuple = None

    def allowed(self):
        """What is allowed, in words, for error messages."""
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.kind in ("int", "float") and self.low is not None:
            low = f"> {self.low}" if self.open_low else f">= {self.low}"
            upper = f" and <= {self.high}" if self.high is not None else ""
            return f"{'an integer' if self.kind == 'int' else 'a number'} {low}{upper}"
        return {"bool": "True or False", "str": "a string", "list": "a list", "dict": "a dict",
                "int": "an integer", "float": "a number"}[self.kind]


def _number(value, kind):
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def problem_of(setting, value):
    """Why ``value`` is not allowed for ``setting`` (a sentence), or None."""
    if setting.choices:
        return None if value in setting.choices else setting.allowed()
    if setting.kind in ("int", "float"):
        if not _number(value, setting.kind):
            return setting.allowed()
        too_low = setting.low is not None and (value <= setting.low if setting.open_low
                                               else value < setting.low)
        too_high = setting.high is not None and value > setting.high
        return setting.allowed() if too_low or too_high else None
    types = {"bool": bool, "str": str, "list": list, "dict": dict}
    return None if isinstance(value, types[setting.kind]) else setting.allowed()


def _int(name, default, meaning, low=1, high=None, models=None):
    return Setting(name, "int", default, meaning, low=low, high=high, models=models)


def _float(name, default, meaning, low=0.0, high=None, open_low=False, models=None):
    return Setting(name, "float", default, meaning, low=low, high=high, open_low=open_low, models=models)


def _text(name, default, meaning, models=None):
    return Setting(name, "str", default, meaning, models=models)


def _flag(name, default, meaning, models=None):
    return Setting(name, "bool", default, meaning, models=models)


def _llm_slot(prefix, models, path_default=None, dtype_default="bfloat16"):
    return [
        _text(f"{prefix}_path", path_default, "Hugging Face hub id or local directory (save_pretrained)",
              models),
        Setting(f"{prefix}_dtype", "str", dtype_default, "weights dtype", choices=DTYPES, models=models),
        Setting(f"{prefix}_lora", "dict", None, "~ or {r, alpha, dropout, target_modules} (peft LoRA)",
                models=models),
        _flag(f"{prefix}_gradient_checkpointing", False, "recompute activations in backward", models),
    ]


EVERY_MODEL = [
    _flag("eval_mask_history", False, "full sort: the user's earlier items score -inf"),
    _flag("eval_neg_exclude_history", False, "uniN/popN: negatives outside the whole history"),
    Setting("eval_item_groups", "list", None, "thresholds on a target's training users: metrics per group"),
    _flag("eval_shuffle_history", False, "permute each user's history (seeded) at evaluation only"),
    _int("validations_per_epoch", 1, "validate this many times per epoch"),
    _float("lr_decay_per_validation", None, "multiply the learning rate by this after each validation",
           low=0.0, high=1.0, open_low=True),
    Setting("adam_betas", "list", None, "Adam's two betas, each in [0, 1)"),
    Setting("distributed_strategy", "str", "ddp", "how several processes train", choices=("ddp", "fsdp")),
    _int("gradient_accumulation_steps", 1, "batches per optimizer step", high=4096),
    _float("distributed_timeout_minutes", 10, "how long a collective waits for a rank that stops answering",
           high=24 * 60, open_low=True),
    _float("distributed_once_timeout_minutes", 120, "how long the others wait for rank 0's once-per-job work",
           high=7 * 24 * 60, open_low=True),
]

ITEM_TEXT = [
    Setting("item_text_fields", "list", None, ".item columns that describe an item", models=PLUGIN_MODELS),
    _text("item_text_template", "{value}", "how one field is written ({name}, {value})", PLUGIN_MODELS),
    _text("item_text_separator", ", ", "joins the written fields", PLUGIN_MODELS),
    _text("item_text_missing_value", None, "written for a missing field; ~ leaves it out", PLUGIN_MODELS),
    _text("item_text_fallback", "Unknown item", "text of an item with no field value", PLUGIN_MODELS),
    _text("item_title_field", "title", ".item column holding the title", PLUGIN_MODELS),
    _text("item_title_fallback", "No Title", "title of an item without one", PLUGIN_MODELS),
    _flag("trust_remote_code", False, "run modelling code shipped with a checkpoint", PLUGIN_MODELS),
]

TEACHER_MODELS = ("LLMSRec", "ALLMRec")
TEACHER = [
    _text("cf_model", "SASRec", "the CF teacher: a RecBole sequential model", TEACHER_MODELS),
    _text("cf_checkpoint", None, "RecBole checkpoint of cf_model on this data; ~ pre-trains one",
          TEACHER_MODELS),
    Setting("cf_config", "dict", None, "the teacher's RecBole keys", models=TEACHER_MODELS),
    _int("history_max_items", 10, "history items shown in the prompt", models=TEACHER_MODELS),
]

LLMSREC = ("LLMSRec",)
ALLMREC = ("ALLMRec",)
HLLM = ("HLLM",)
MODEL_KEYS = [
    *_llm_slot("llm", ("LLMSRec", "ALLMRec")),
    _flag("prefix_kv_cache", True, "reuse the KV cache of the fixed prompt prefixes", LLMSREC),
    _int("llm_eval_batch_size", 64, "prompts per LLM forward when evaluating", models=LLMSREC),
    _text("interaction_word", "purchases", "what the prompt calls an interaction", LLMSREC),
    _text("user_prompt_template", None, "the user prompt ({history}, [UserOut])", LLMSREC),
    _text("item_prompt_template", None, "the item prompt ({title}, [HistoryEmb], [ItemOut])", LLMSREC),
    _flag("history_show_time", True, "the date of each history item in the prompt", LLMSREC),
    Setting("time_field_unit", "str", "s", "unit of the time field", choices=("s", "ms"), models=LLMSREC),
    _int("max_title_tokens", 128, "item titles are cut to this many tokens", models=LLMSREC),
    _int("projection_hidden_size", 2048, "hidden width of pred_user / pred_item", models=LLMSREC),
    _int("representation_size", 128, "size of user and item vectors", models=LLMSREC),
    _int("train_negatives", 3, "negatives per user in training", models=LLMSREC),
    _float("distill_weight", 1.0, "weight of the distillation loss", models=LLMSREC),
    _float("uniformity_weight", 1.0, "weight of each uniformity term", models=LLMSREC),
    _text("text_encoder_path", None, "stage-1 Sentence-BERT encoder (fine-tuned)", ALLMREC),
    Setting("text_encoder_dtype", "str", "float32", "its dtype", choices=DTYPES, models=ALLMREC),
    _int("text_encoder_max_length", 256, "tokens per item text", models=ALLMREC),
    _text("alignment_text_template", '"{text}"', "stage-1 text of an item ({text})", ALLMREC),
    _int("alignment_size", 128, "latent size of both auto-encoders", models=ALLMREC),
    _float("stage1_item_weight", 0.5, "weight of the item reconstruction loss", models=ALLMREC),
    _float("stage1_text_weight", 0.2, "weight of the text reconstruction loss", models=ALLMREC),
    _int("stage1_epochs", 10, "stage-1 epochs", models=ALLMREC),
    _float("stage1_learning_rate", 0.0001, "stage-1 Adam learning rate", open_low=True, models=ALLMREC),
    _int("stage1_batch_size", 32, "stage-1 batch size", models=ALLMREC),
    _text("stage1_checkpoint", None, "ALLMRec-stage1-*.pth of an earlier run", ALLMREC),
    _text("prompt_template", None, "the stage-2 prompt ({history}, {candidates})", ALLMREC),
    _int("num_candidates", 20, "candidates per prompt", low=2, models=ALLMREC),
    _int("rerank_k", 20, "full sort: stage-1 top-k reranked by the LLM", models=ALLMREC),
    _int("rank_batch_size", 16, "prompts per ranking forward", models=ALLMREC),
    _int("rank_projection_rows", 64, "answer states per vocabulary projection", models=ALLMREC),
    *_llm_slot("item_llm", HLLM, dtype_default="float32"),
    *_llm_slot("user_llm", HLLM, dtype_default="float32"),
    _flag("freeze_item_llm", False, "freeze the Item LLM and [ITEM]", HLLM),
    Setting("mixed_precision", "str", "bfloat16", "autocast dtype on GPU; ~ for none",
            choices=("bfloat16", "float16"), models=HLLM),
    _text("item_prompt", None, "text before an item's fields", HLLM),
    _int("max_text_length", 256, "tokens per item text", models=HLLM),
    _int("item_encode_tokens", 16384, "Item LLM tokens per forward", models=HLLM),
    _flag("item_encode_packed", None, "pack texts without padding; ~: on CUDA in half precision", HLLM),
    _int("num_negatives", 512, "negatives per step", models=HLLM),
    _float("nce_threshold", 0.99, "negatives whose cosine to the positive exceeds it are masked "
           "(above 1: none)", low=-1.0, models=HLLM),
    _float("temperature_init", 0.07, "initial temperature", high=1.0, open_low=True, models=HLLM),
    _float("temperature_min", 0.01, "lowest temperature", high=1.0, open_low=True, models=HLLM),
    _float("warmup_ratio", 0.1, "share of the steps spent warming up", high=1.0, models=HLLM),
]

SCHEMA = {setting.name: setting for setting in (*EVERY_MODEL, *ITEM_TEXT, *TEACHER, *MODEL_KEYS)}


def _betas_problem(value):
    ok = len(value) == 2 and all(_number(b, "float") and 0 <= b < 1 for b in value)
    return None if ok else "a list of two numbers in [0, 1), e.g. [0.9, 0.98]"


def _groups_problem(value):
    numbers = all(_number(t, "float") and t >= 0 for t in value)
    increasing = numbers and all(a < b for a, b in zip(value, value[1:]))
    return None if value and increasing else "a non-empty list of increasing numbers >= 0, e.g. [10, 50]"


def _lora_problem(value):
    unknown = sorted(set(value) - set(LORA_ENTRIES))
    return f"a dict of {', '.join(LORA_ENTRIES)} (unknown: {', '.join(unknown)})" if unknown else None


EXTRA_CHECKS = {"adam_betas": _betas_problem, "eval_item_groups": _groups_problem,
                **{f"{prefix}_lora": _lora_problem for prefix in ("llm", "item_llm", "user_llm")}}


class SettingError(ValueError):
    """A config value outside what its key allows; the message names the key, the value and the rule."""


def _check(setting, value):
    problem = problem_of(setting, value)
    if problem is None and setting.name in EXTRA_CHECKS:
        problem = EXTRA_CHECKS[setting.name](value)
    if problem:
        raise SettingError(f"{setting.name}={value!r} is not allowed: it must be {problem} "
                           f"({setting.meaning}).")


def _check_effect(config):
    """Refuse settings that would be accepted and do nothing for this model (never labelled as done)."""
    from recbole.utils import ModelType

    model = config["model"]
    if config["eval_shuffle_history"] and config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        raise SettingError(f"eval_shuffle_history=True has no effect for {model}: it permutes the "
                           "history of a sequential model's rows, and a general model has none.")
    if config["distributed_strategy"] == "fsdp" and model != "HLLM":
        raise SettingError(f"distributed_strategy='fsdp' is not allowed for {model}: FSDP shards models "
                           "whose LLMs train (HLLM); use 'ddp' (the default).")
    init, low = config["temperature_init"], config["temperature_min"]
    if model == "HLLM" and init is not None and low is not None and low > init:
        raise SettingError(f"temperature_min={low!r} is above temperature_init={init!r}.")


def check_settings(config):
    """Check every schema key that applies to ``config``'s model, once, before any data is loaded."""
    model = config["model"]
    for setting in SCHEMA.values():
        value = config[setting.name]
        if value is not None and (setting.models is None or model in setting.models):
            _check(setting, value)
    _check_effect(config)
