"""ALLMRec's keys (defaults in ``ALLMRec.yaml``), checked by ``settings.check_settings``."""

from recbole_llmsrec.models.cf_teacher.settings import TEACHER_SETTINGS
from recbole_llmsrec.settings import DTYPES, Setting, integer, number, text

SETTINGS = [
    *TEACHER_SETTINGS,
    text("text_encoder_path", None, "stage-1 Sentence-BERT encoder (fine-tuned)"),
    Setting("text_encoder_dtype", "str", "float32", "its dtype", choices=DTYPES),
    integer("text_encoder_max_length", 256, "tokens per item text"),
    text("alignment_text_template", '"{text}"', "stage-1 text of an item ({text})"),
    integer("alignment_size", 128, "latent size of both auto-encoders"),
    number("stage1_item_weight", 0.5, "weight of the item reconstruction loss"),
    number("stage1_text_weight", 0.2, "weight of the text reconstruction loss"),
    integer("stage1_epochs", 10, "stage-1 epochs"),
    number("stage1_learning_rate", 0.0001, "stage-1 Adam learning rate", open_low=True),
    integer("stage1_batch_size", 32, "stage-1 batch size"),
    text("stage1_checkpoint", None, "ALLMRec-stage1-*.pth of an earlier run"),
    text("prompt_template", None, "the stage-2 prompt ({history}, {candidates})"),
    integer("num_candidates", 20, "candidates per prompt", low=2),
    integer("rerank_k", 20, "full sort: stage-1 top-k reranked by the LLM"),
    integer("rank_batch_size", 16, "prompts per ranking forward"),
    integer("rank_projection_rows", 64, "answer states per vocabulary projection"),
]
