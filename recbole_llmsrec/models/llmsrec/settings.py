"""LLMSRec's keys (defaults in ``LLMSRec.yaml``), checked by ``settings.check_settings``."""

from recbole_llmsrec.models.cf_teacher.settings import TEACHER_SETTINGS
from recbole_llmsrec.settings import Setting, flag, integer, number, text

SETTINGS = [
    *TEACHER_SETTINGS,
    flag("prefix_kv_cache", True, "reuse the KV cache of the fixed prompt prefixes"),
    integer("llm_eval_batch_size", 64, "prompts per LLM forward when evaluating"),
    text("interaction_word", "purchases", "what the prompt calls an interaction"),
    text("user_prompt_template", None, "the user prompt ({history}, [UserOut])"),
    text("item_prompt_template", None, "the item prompt ({title}, [HistoryEmb], [ItemOut])"),
    flag("history_show_time", True, "the date of each history item in the prompt"),
    Setting("time_field_unit", "str", "s", "unit of the time field", choices=("s", "ms")),
    integer("max_title_tokens", 128, "item titles are cut to this many tokens"),
    integer("projection_hidden_size", 2048, "hidden width of pred_user / pred_item"),
    integer("representation_size", 128, "size of user and item vectors"),
    integer("train_negatives", 3, "negatives per user in training"),
    number("distill_weight", 1.0, "weight of the distillation loss"),
    number("uniformity_weight", 1.0, "weight of each uniformity term"),
]
