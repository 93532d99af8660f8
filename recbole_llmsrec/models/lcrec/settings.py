"""LCRec's keys (defaults in ``LCRec.yaml``), checked by ``settings.check_settings``; the item-index
keys are the generative family's (``models.generative.index_settings``)."""

from recbole_llmsrec.models.generative.index_settings import INDEX_SETTINGS, check_index_settings
from recbole_llmsrec.settings import Setting, SettingError, flag, integer, llm_slot, number, text

TASKS = ("seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain")

SETTINGS = [
    *llm_slot("llm", None, dtype_default="float32"),
    *INDEX_SETTINGS,
    Setting(
        "mixed_precision",
        "str",
        "bfloat16",
        "autocast dtype on GPU; ~ for none",
        choices=("bfloat16", "float16"),
    ),
    Setting("lcrec_tasks", "list", None, f"training tasks, a list of {', '.join(TASKS)}"),
    text("lcrec_prompts_file", None, "YAML of prompt templates; ~: the package's prompts.yaml"),
    Setting(
        "lcrec_user_text_fields",
        "dict",
        None,
        "{placeholder: .user column} for explicit_preference, query, user_related_intention, ...",
    ),
    Setting("item_description_fields", "list", None, ".item columns written as {description}"),
    integer("prompt_history_length", 20, "history items in a prompt (LC-Rec's max_his_len)"),
    text("history_separator", ", ", "joins the history's items in a prompt"),
    flag("history_numbered", False, "number the history's items 1., 2., ... (add_prefix)"),
    integer("eval_prompt_index", 0, "the seqrec template used for evaluation", low=0),
    integer("num_beams", 20, "beams of the constrained beam search: the items a user is given"),
    integer("generation_batch_size", 16, "users per constrained beam search"),
    integer("max_prompt_tokens", 2048, "a prompt is cut to this many tokens (model_max_length)"),
    number("warmup_ratio", 0.01, "share of the steps spent warming up", high=1.0),
]


def check(config):
    """The tasks are known, the index keys agree, and the evaluation template exists."""
    tasks = config["lcrec_tasks"] or []
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise SettingError(
            f"lcrec_tasks={tasks!r} is not allowed: it must be a non-empty list of "
            f"{', '.join(TASKS)} (unknown: {', '.join(map(str, unknown)) or 'none'})."
        )
    if "seqrec" not in tasks:
        raise SettingError(
            f"lcrec_tasks={tasks!r} is not allowed: it must hold seqrec, the task evaluated."
        )
    check_index_settings(config)
