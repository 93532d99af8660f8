"""Checkpoints: loaded without running code (``load_checkpoint``), and the data they were trained
on.

Every checkpoint the plugin writes (a model's, the CF teacher's, A-LLMRec's stage 1) holds, under
``"data"``, the user and item token tables (internal id -> raw token) and the run's data
fingerprint. A model's weights are indexed by internal ids, and RecBole numbers users and items by
their first appearance in the atomic file: the same interactions in another row order give other
ids, and a model evaluated on them scores every item with another item's embedding, silently.
Loading a checkpoint onto data whose tables differ is refused with the first difference (remapping
is not attempted: which of a model's tensors are indexed by item ids is not known in general).
"""

import os
import uuid
from logging import getLogger

import recbole.utils
import torch

from recbole_llmsrec import recbole_fixes
from recbole_llmsrec.config import Config


def load_checkpoint(path, map_location="cpu", allow_unsafe=False):
    """A RecBole checkpoint loaded with ``weights_only=True``; one RecBole wrote without the plugin
    (pickle protocol 4) fails with the fix in the error, or with ``allow_unsafe`` (a trusted file)
    fully unpickles."""
    try:
        # what Config() does, also where none was built yet (RecBole's Config read by name)
        recbole_fixes.install()
        torch.serialization.add_safe_globals([Config])
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file not found: {path}") from None
    except Exception as err:  # torch raises UnpicklingError/RuntimeError variants here
        if allow_unsafe:
            return torch.load(path, map_location=map_location, weights_only=False)
        raise ValueError(
            f"checkpoint {path} cannot be loaded safely (weights_only=True): "
            f"{str(err).splitlines()[0]}. "
            "It was probably written by RecBole without recbole_llmsrec. Re-run the training with "
            "the "
            "plugin installed, or, if you trust the file, pass allow_unsafe=True."
        ) from err


def data_ids(dataset, fingerprint=None):
    """The ``"data"`` entry of a checkpoint trained on ``dataset`` (plain lists and strings, so that
    it loads with ``weights_only=True``)."""
    return {
        "user_tokens": [str(token) for token in dataset.field2id_token[dataset.uid_field]],
        "item_tokens": [str(token) for token in dataset.field2id_token[dataset.iid_field]],
        "fingerprint": dict(fingerprint or {}),
    }


def _difference(kind, saved, current):
    """A sentence on the first difference between two token tables, or None when they are equal."""
    if saved == current:
        return None
    if sorted(saved) == sorted(current):
        index = next(i for i, (a, b) in enumerate(zip(saved, current)) if a != b)
        return (
            f"the same {len(saved) - 1} {kind}s numbered in another order ({kind} id {index} is "
            f"{saved[index]!r} in the checkpoint and {current[index]!r} here): RecBole numbers "
            f"{kind}s by their first appearance in the file, so its rows are in another order"
        )
    index = next(
        (i for i, (a, b) in enumerate(zip(saved, current)) if a != b), min(len(saved), len(current))
    )
    found = lambda table: repr(table[index]) if index < len(table) else "absent"  # noqa: E731
    return (
        f"{kind} id {index} is {found(saved)} in the checkpoint and {found(current)} here "
        f"({len(saved) - 1} vs {len(current) - 1} {kind}s)"
    )


def check_checkpoint_data(saved, current, path, key):
    """Refuse the checkpoint at ``path`` (given as ``key``) when its ``"data"`` entry ``saved`` has
    other user or item tables than ``current`` (this run's ``data_ids``); one without the entry
    (written before checkpoints carried it) is named in a warning, its settings being checked
    alone."""
    if not saved:
        getLogger().warning(
            f"{key}={path} does not record the ids of its data (written by an older "
            "version): only its settings are compared with this run's."
        )
        return
    for kind in ("item", "user"):
        problem = _difference(kind, saved[f"{kind}_tokens"], current[f"{kind}_tokens"])
        if problem:
            raise ValueError(
                f"{key}={path} was trained on other data than this run: {problem}. Use it "
                "with the data files it was trained on (same rows, same order)."
            )


def check_checkpoint_file(path, current, key):
    """``check_checkpoint_data`` of the checkpoint file at ``path``; returns the loaded
    checkpoint."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    check_checkpoint_data(checkpoint.get("data"), current, path, key)
    return checkpoint


def unique_checkpoint_path(checkpoint_dir, prefix):
    """``{checkpoint_dir}/{prefix}-{time}-{random}.pth``. RecBole's ``{model}-{time}.pth`` made two
    runs started in the same second write the same file; the random part keeps their names apart."""
    stamp = recbole.utils.get_local_time()
    return os.path.join(checkpoint_dir, f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}.pth")
