"""The base class of the LLM-with-CF-teacher family (LLM-SRec, A-LLMRec): a frozen CF teacher
(``stage0``), a frozen causal LLM whose prompts hold soft tokens, and the pieces both build
alike."""

from logging import getLogger

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llmsrec.data.dataset import sample_unseen_items, training_history
from recbole_llmsrec.distribution.process_group import rank
from recbole_llmsrec.hooks import ModelHooks, TeacherStudentHooks
from recbole_llmsrec.llm.loading import (
    FrozenLLMNotSaved,
    context_length,
    load_llm_from_config,
    require_causal,
    uses_gradient_checkpointing,
)
from recbole_llmsrec.models.cf_teacher.stage0 import build_teacher, user_representation
from recbole_llmsrec.settings import require_at_least


class LLMWithCFTeacher(FrozenLLMNotSaved, TeacherStudentHooks, ModelHooks, SequentialRecommender):
    """A RecBole sequential model with ``self.cf_model`` (the frozen teacher, always in eval mode:
    the originals left its dropout on), ``self.llm``/``self.tokenizer`` (frozen, from ``llm_path``;
    left out of checkpoints) and, for its prompts, ``soft_tokens`` added to the tokenizer as special
    tokens (``self.soft_token_ids``). Also: ``history_max_items``, the training history for
    negatives drawn per rank (``sample_negatives``), and the LLM's context for prompts
    (``max_prompt_tokens``; ``note_prompt_cut`` counts the prompts cut to fit). ``llm_kind``:
    ``"base"`` (no LM head) or ``"causal_lm"``."""

    input_type = InputType.POINTWISE
    soft_tokens = ()
    llm_kind = "base"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.config = config
        self.cf_model, self.cf_teacher_loaded = build_teacher(config, dataset)
        # frozen: no dropout even in the train mode gradient checkpointing needs (see load_llm)
        self.llm, self.tokenizer = load_llm_from_config(config, kind=self.llm_kind, frozen=True)
        require_causal(self.llm, "llm_path")  # prompts are read left to right
        self.llm_checkpointing = uses_gradient_checkpointing(self.llm)
        self.tokenizer.add_tokens(list(self.soft_tokens), special_tokens=True)
        self.tokenizer.padding_side = "right"
        self.soft_token_ids = self.tokenizer.convert_tokens_to_ids(list(self.soft_tokens))
        self.history_max_items = require_at_least(config, "history_max_items", 1)
        self.history_matrix = training_history(dataset)
        # each rank draws its own negatives (one process: seed + 0)
        self.negative_generator = torch.Generator().manual_seed(config["seed"] + rank())
        self.max_prompt_tokens = context_length(self.llm, self.tokenizer)
        self.prompts_shortened = 0

    def train(self, mode=True):
        super().train(mode)
        # HF checkpoints only modules in train mode: with llm_gradient_checkpointing the LLM follows
        # the model's mode; without dropout (frozen=True) it computes the same as in eval()
        self.llm.train(mode and self.llm_checkpointing)
        self.cf_model.eval()
        return self

    def load_cf_teacher(self, state_dict):
        self.cf_model.load_state_dict(state_dict)
        self.mark_cf_teacher_ready()

    def mark_cf_teacher_ready(self):
        """Record that the teacher holds trained weights (in a buffer: checkpoints keep it)."""
        raise NotImplementedError

    def teacher_users(self, interaction):
        """The teacher's user vectors ``[B, d]`` of the rows of ``interaction``."""
        return user_representation(
            self.cf_model, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        )

    num_negatives = 1

    def sample_negatives(self, users, num=None):
        """``num`` (default ``num_negatives``) seeded distinct items per user outside its training
        history (never the target)."""
        num = self.num_negatives if num is None else num
        return sample_unseen_items(
            self.history_matrix, users, num, self.n_items, self.negative_generator
        ).to(users.device)

    def check_soft_token_slots(self, slots_match):
        """Refuse a tokenizer that split a soft token (``slots_match``: the slots counted right)."""
        if not slots_match:
            raise ValueError(
                f"the tokenizer of {self.llm.name_or_path} did not keep the soft-token slots of "
                "the "
                "prompts as single special tokens."
            )

    def note_prompt_cut(self, what_stays):
        """Count one prompt cut to the LLM's context, warning at the first (``what_stays``: the part
        of the prompt never cut)."""
        if not self.prompts_shortened:
            getLogger().warning(
                f"{type(self).__name__}: a prompt is longer than the LLM's context of "
                f"{self.max_prompt_tokens} tokens: its oldest history items are left out until it "
                f"fits ({what_stays} stay); the number of prompts cut is logged at the end of the "
                "run."
            )
        self.prompts_shortened += 1
