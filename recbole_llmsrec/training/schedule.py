"""Training schedules any model may use (README "Training schedule"): ``validations_per_epoch`` cuts
an epoch into parts (``EpochInParts``), and the step arithmetic of a schedule over such parts."""

import math


def epoch_parts(config, loader):
    """How many parts an epoch of ``loader`` is cut into: ``validations_per_epoch``, at most one per
    batch."""
    return max(1, min(config["validations_per_epoch"] or 1, len(loader)))


def batches_before(part_index, batches, parts):
    """Batches trained before part ``part_index`` (RecBole's epoch counter when an epoch of
    ``batches`` batches is cut into ``parts`` parts): whole epochs, then the earlier parts of the
    current one."""
    epochs, part = divmod(part_index, parts)
    return epochs * batches + sum(batches // parts + (p < batches % parts) for p in range(part))


def optimizer_steps_before(part_index, batches, parts, accumulation):
    """Optimizer steps taken before part ``part_index`` when each part's batches are grouped by
    ``gradient_accumulation_steps`` (a part's last group may be shorter)."""
    epochs, part = divmod(part_index, parts)
    per_part = [
        math.ceil(
            (batches_before(p + 1, batches, parts) - batches_before(p, batches, parts))
            / accumulation
        )
        for p in range(parts)
    ]
    return epochs * sum(per_part) + sum(per_part[:part])


class EpochInParts:
    """A training loader as ``parts`` consecutive parts per (shuffled) pass: each iteration yields
    the next part, so RecBole's loop validates ``parts`` times per real epoch and still sees every
    sample once."""

    def __init__(self, loader, parts, start_part=0):
        self.loader, self.parts = loader, parts
        self._part, self._iterator = start_part % parts, None

    def _size(self, part):
        return batches_before(part + 1, len(self.loader), self.parts) - batches_before(
            part, len(self.loader), self.parts
        )

    def __len__(self):
        return self._size(self._part)

    def __iter__(self):
        if self._iterator is None or self._part == 0:
            self._iterator = iter(self.loader)
            for _ in range(batches_before(self._part, len(self.loader), self.parts)):  # resumed
                next(self._iterator)
        for _ in range(self._size(self._part)):
            yield next(self._iterator)
        self._part = (self._part + 1) % self.parts

    def __getattr__(self, name):
        if name == "loader":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
