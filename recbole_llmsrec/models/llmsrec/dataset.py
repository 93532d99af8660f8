"""LLM-SRec's training split."""

from recbole_llmsrec.data.dataset import UserSequenceDataset


class LLMSRecDataset(UserSequenceDataset):
    """LLM-SRec trains one example per user per epoch: target = last training item (spec section
    6)."""
