"""Every config key this plugin adds, in one schema: type, allowed values, default and meaning; and
the checks of the other settings the plugin reads (dataset names, ``require_at_least``).

The schema is this module's keys (every model; item text for the plugin's models) plus each plugin
model's own keys, from the settings module its registry entry names (``models/<name>/settings.py``).
``check_settings`` runs once, when a ``Config`` is built (before any data is loaded), for RecBole's
models and the plugin's alike, and refuses a value with the key, the value and what is allowed. A
key that is absent (``None``; RecBole's own models never read the plugin's YAMLs) means its default.
The YAML comments and the README's config table are tested against this schema
(``tests/test_settings.py``); the defaults of ``properties/overall.yaml`` are the schema's, a
model's YAML may override them for that model.
"""

import dataclasses
import math
from dataclasses import dataclass

from recbole.utils import ModelType

from recbole_llmsrec import registry

PLUGIN = "plugin"  # ``Setting.models`` for a key every plugin model reads
DTYPES = ("bfloat16", "float16", "float32")
LORA_ENTRIES = ("r", "alpha", "dropout", "target_modules")


@dataclass(frozen=True)
class Setting:
    """One key: ``kind`` is int, float, bool, str, list or dict; ``low``/``high`` bound a number
    (``open_low``: strictly above ``low``); ``choices`` lists the allowed values; ``models`` the
    plugin models it applies to (``None``: every model run through the plugin; ``PLUGIN``: every
    plugin model; a model's settings module leaves it ``None`` and the schema fills in the model's
    name)."""

    name: str
    kind: str
    default: object
    meaning: str
    low: float = None
    high: float = None
    open_low: bool = False
    choices: tuple = None
    models: tuple = None

    def applies_to(self, model):
        if self.models is None:
            return True
        if self.models == PLUGIN:
            return registry.entry_of(model) is not None
        return model in self.models

    def allowed(self):
        """What is allowed, in words, for error messages."""
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.kind in ("int", "float") and self.low is not None:
            low = f"> {self.low}" if self.open_low else f">= {self.low}"
            upper = f" and <= {self.high}" if self.high is not None else ""
            return f"{'an integer' if self.kind == 'int' else 'a number'} {low}{upper}"
        return {
            "bool": "True or False",
            "str": "a string",
            "list": "a list",
            "dict": "a dict",
            "int": "an integer",
            "float": "a number",
        }[self.kind]


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
        too_low = setting.low is not None and (
            value <= setting.low if setting.open_low else value < setting.low
        )
        too_high = setting.high is not None and value > setting.high
        return setting.allowed() if too_low or too_high else None
    types = {"bool": bool, "str": str, "list": list, "dict": dict}
    return None if isinstance(value, types[setting.kind]) else setting.allowed()


def integer(name, default, meaning, low=1, high=None, models=None):
    return Setting(name, "int", default, meaning, low=low, high=high, models=models)


def number(name, default, meaning, low=0.0, high=None, open_low=False, models=None):
    return Setting(
        name, "float", default, meaning, low=low, high=high, open_low=open_low, models=models
    )


def text(name, default, meaning, models=None):
    return Setting(name, "str", default, meaning, models=models)


def flag(name, default, meaning, models=None):
    return Setting(name, "bool", default, meaning, models=models)


def llm_slot(prefix, models, path_default=None, dtype_default="bfloat16"):
    return [
        text(
            f"{prefix}_path",
            path_default,
            "Hugging Face hub id or local directory (save_pretrained)",
            models,
        ),
        Setting(
            f"{prefix}_dtype", "str", dtype_default, "weights dtype", choices=DTYPES, models=models
        ),
        Setting(
            f"{prefix}_lora",
            "dict",
            None,
            "~ or {r, alpha, dropout, target_modules} (peft LoRA)",
            models=models,
        ),
        flag(
            f"{prefix}_gradient_checkpointing", False, "recompute activations in backward", models
        ),
    ]


EVERY_MODEL = [
    flag("eval_mask_history", False, "full sort: the user's earlier items score -inf"),
    flag("eval_neg_exclude_history", False, "uniN/popN: negatives outside the whole history"),
    Setting(
        "eval_item_groups",
        "list",
        None,
        "thresholds on a target's training users: metrics per group",
    ),
    flag("eval_shuffle_history", False, "permute each user's history (seeded) at evaluation only"),
    integer("validations_per_epoch", 1, "validate this many times per epoch"),
    number(
        "lr_decay_per_validation",
        None,
        "multiply the learning rate by this after each validation",
        low=0.0,
        high=1.0,
        open_low=True,
    ),
    Setting("adam_betas", "list", None, "Adam's two betas, each in [0, 1)"),
    Setting(
        "distributed_strategy", "str", "ddp", "how several processes train", choices=("ddp", "fsdp")
    ),
    integer("gradient_accumulation_steps", 1, "batches per optimizer step", high=4096),
    number(
        "distributed_timeout_minutes",
        10,
        "how long a collective waits for a rank that stops answering",
        high=24 * 60,
        open_low=True,
    ),
    number(
        "distributed_once_timeout_minutes",
        120,
        "how long the others wait while rank 0 works alone (cache fill, checkpoint)",
        high=7 * 24 * 60,
        open_low=True,
    ),
]

ITEM_TEXT = [
    Setting("item_text_fields", "list", None, ".item columns that describe an item", models=PLUGIN),
    text("item_text_template", "{value}", "how one field is written ({name}, {value})", PLUGIN),
    text("item_text_separator", ", ", "joins the written fields", PLUGIN),
    text("item_text_missing_value", None, "written for a missing field; ~ leaves it out", PLUGIN),
    text("item_text_fallback", "Unknown item", "text of an item with no field value", PLUGIN),
    text("item_title_field", "title", ".item column holding the title", PLUGIN),
    text("item_title_fallback", "No Title", "title of an item without one", PLUGIN),
    flag("trust_remote_code", False, "run modelling code shipped with a checkpoint", PLUGIN),
]


def _betas_problem(value):
    ok = len(value) == 2 and all(_number(b, "float") and 0 <= b < 1 for b in value)
    return None if ok else "a list of two numbers in [0, 1), e.g. [0.9, 0.98]"


def _groups_problem(value):
    numbers = all(_number(t, "float") and t >= 0 for t in value)
    increasing = numbers and all(a < b for a, b in zip(value, value[1:]))
    return (
        None
        if value and increasing
        else "a non-empty list of increasing numbers >= 0, e.g. [10, 50]"
    )


def _lora_problem(value):
    unknown = sorted(set(value) - set(LORA_ENTRIES))
    return (
        f"a dict of {', '.join(LORA_ENTRIES)} (unknown: {', '.join(unknown)})" if unknown else None
    )


EXTRA_CHECKS = {
    "adam_betas": _betas_problem,
    "eval_item_groups": _groups_problem,
    **{f"{prefix}_lora": _lora_problem for prefix in ("llm", "item_llm", "user_llm")},
}


class SettingError(ValueError):
    """A config value outside what its key allows; the message names the key, the value and the
    rule."""


def _check(setting, value):
    problem = problem_of(setting, value)
    if problem is None and setting.name in EXTRA_CHECKS:
        problem = EXTRA_CHECKS[setting.name](value)
    if problem:
        raise SettingError(
            f"{setting.name}={value!r} is not allowed: it must be {problem} ({setting.meaning})."
        )


def _check_effect(config):
    """Refuse settings that would be accepted and do nothing for this model (never labelled as
    done)."""
    model = config["model"]
    if config["eval_shuffle_history"] and not _is_sequential(config):
        raise SettingError(
            f"eval_shuffle_history=True has no effect for {model}: it permutes the "
            "history of a sequential model's rows, and a general model has none."
        )
    learner = str(config["learner"]).lower()
    if config["adam_betas"] and learner not in ("adam", "adamw"):
        raise SettingError(
            f"adam_betas is set but learner={config['learner']!r} is not adam or adamw."
        )
    entry = registry.entry_of(model)
    if config["distributed_strategy"] == "fsdp" and not (entry and entry.fsdp):
        raise SettingError(
            f"distributed_strategy='fsdp' is not allowed for {model}: FSDP shards models "
            "whose LLMs train (HLLM); use 'ddp' (the default)."
        )
    own = registry.settings_module(model)
    if own is not None and hasattr(own, "check"):
        own.check(config)


def check_settings(config):
    """Check every schema key that applies to ``config``'s model, once, before any data is
    loaded."""
    model = config["model"]
    for setting in schema().values():
        value = config[setting.name]
        if value is not None and setting.applies_to(model):
            _check(setting, value)
    _check_effect(config)


def _own_settings(model):
    """A plugin model's keys (its settings module's ``SETTINGS``), each applying to that model."""
    module = registry.settings_module(model)
    return [
        setting if setting.models is not None else dataclasses.replace(setting, models=(model,))
        for setting in (module.SETTINGS if module else [])
    ]


def schema():
    """``{key: Setting}`` of every key: this module's and every registered plugin model's; a key two
    models declare alike (the LLM-with-teacher keys) applies to both."""
    merged = {setting.name: setting for setting in (*EVERY_MODEL, *ITEM_TEXT)}
    for model in registry.plugin_model_names():
        for setting in _own_settings(model):
            known = merged.get(setting.name)
            if known is not None and known.models not in (None, PLUGIN):
                models = tuple(dict.fromkeys((*known.models, *setting.models)))
                setting = dataclasses.replace(setting, models=models)
            merged[setting.name] = setting
    return merged


def __getattr__(name):
    # the schema as a mapping, built when read (models may be registered later)
    if name == "SCHEMA":
        return schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_sequential(config):
    return config["MODEL_TYPE"] == ModelType.SEQUENTIAL


def require_at_least(config, key, minimum):
    """Refuse an integer setting below ``minimum``, naming the key and the allowed range."""
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key}={value!r} is not allowed: it must be an integer >= {minimum}.")
    return value


# RecBole's KD_DAGFM builds its teacher with eval(config["teacher"]): only its own networks may be
# named
KD_DAGFM_TEACHERS = ("CrossNet", "CIN")


def check_dataset_name(name):
    """A dataset is a plain name (a folder under ``data_path``): one with a path separator or ``..``
    would make the plugin read ``properties/dataset/<name>.yaml`` and write its log outside their
    folders."""
    if name is not None and (str(name) in ("", ".", "..") or any(c in str(name) for c in "/\\")):
        raise ValueError(
            f"dataset {name!r} is not allowed: it must be a plain name (the folder under data_path "
            "holding its atomic files), without '/' or '\\', and not '.' or '..'. Point data_path "
            "at "
            "the folder that contains it instead."
        )


def check_eval_driven_keys(model, final):
    """Refuse a value RecBole would pass to ``eval`` (KD_DAGFM's ``teacher``) unless it is
    allowed."""
    if model == "KD_DAGFM" and final.get("teacher") not in KD_DAGFM_TEACHERS:
        raise ValueError(
            f"teacher={final.get('teacher')!r} is not allowed: KD_DAGFM's teacher is one of "
            f"{list(KD_DAGFM_TEACHERS)} (RecBole evaluates this value as Python code)."
        )
