"""The keys every LLM-with-CF-teacher model reads (its frozen LLM and teacher); a model's settings
module lists them with its own (``settings.schema`` gives each to the models that declare it)."""

from recbole_llmsrec.settings import Setting, integer, llm_slot, text

TEACHER_SETTINGS = [
    *llm_slot("llm", None),
    text("cf_model", "SASRec", "the CF teacher: a RecBole sequential model"),
    text("cf_checkpoint", None, "RecBole checkpoint of cf_model on this data; ~ pre-trains one"),
    Setting("cf_config", "dict", None, "the teacher's RecBole keys"),
    integer("history_max_items", 10, "history items shown in the prompt"),
]
