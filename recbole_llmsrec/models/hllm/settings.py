"""HLLM's keys (defaults in ``HLLM.yaml``), checked by ``settings.check_settings``."""

from recbole_llmsrec.settings import Setting, SettingError, flag, integer, llm_slot, number, text

SETTINGS = [
    *llm_slot("item_llm", None, dtype_default="float32"),
    *llm_slot("user_llm", None, dtype_default="float32"),
    flag("freeze_item_llm", False, "freeze the Item LLM and [ITEM]"),
    Setting(
        "mixed_precision",
        "str",
        "bfloat16",
        "autocast dtype on GPU; ~ for none",
        choices=("bfloat16", "float16"),
    ),
    text("item_prompt", None, "text before an item's fields"),
    integer("max_text_length", 256, "tokens per item text"),
    integer("item_encode_tokens", 16384, "Item LLM tokens per forward"),
    flag("item_encode_packed", None, "pack texts without padding; ~: on CUDA in half precision"),
    integer("num_negatives", 512, "negatives per step"),
    number(
        "nce_threshold",
        0.99,
        "negatives whose cosine to the positive exceeds it are masked (above 1: none)",
        low=-1.0,
    ),
    number("temperature_init", 0.07, "initial temperature", high=1.0, open_low=True),
    number("temperature_min", 0.01, "lowest temperature", high=1.0, open_low=True),
    number("warmup_ratio", 0.1, "share of the steps spent warming up", high=1.0),
]


def check(config):
    """The temperature's bounds agree."""
    init, low = config["temperature_init"], config["temperature_min"]
    if init is not None and low is not None and low > init:
        raise SettingError(f"temperature_min={low!r} is above temperature_init={init!r}.")
