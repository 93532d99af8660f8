"""HLLM's training split."""

from recbole_llmsrec.data.dataset import UserSequenceDataset


class HLLMDataset(UserSequenceDataset):
    """HLLM trains every position of a sequence in one pass (spec 2): windows of
    ``MAX_ITEM_LIST_LENGTH`` transitions ending at the user's last item, so every training
    interaction after the first is a target once per epoch (the original's chunks lost the oldest
    remainder and the transitions between chunks)."""

    def window_stride(self):
        return self.config["MAX_ITEM_LIST_LENGTH"]
