"""A-LLMRec's training split."""

from recbole_llmsrec.data.dataset import UserSequenceDataset


class ALLMRecDataset(UserSequenceDataset):
    """A-LLMRec trains one example per user per epoch in stages 1 and 2 (spec sections 2-3)."""
