"""What a run was evaluated on, as raw tokens, and a short hash of it (README "Comparing with
SASRec").

``iter_evaluation_rows`` gives each row of a valid/test loader as ``[user, target, history...]``
(the history as the model receives it, oldest first, cut to ``MAX_ITEM_LIST_LENGTH``; a general
model's rows have no history), ``iter_evaluation_candidates`` each row's ranked candidates (sampled
modes; full sort ranks the whole catalogue), ``iter_training_items`` each user's training
interactions; ``phase_targets`` each phase's users with their targets.
``data_fingerprint`` hashes these with the protocol settings that decide scoring: two runs, of any
models, with the same fingerprint ranked the same candidates for the same users, targets and
histories. Everything is in raw tokens, never internal ids, and the rows are taken from the data
before they are sharded, so the same files and seed give the same fingerprint on any machine and
with any number of processes.
"""

import hashlib
import json
import types

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import ModelType

from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.data.sequences import is_sequential, item_lists
from recbole_llmsrec.evaluation.histories import training_matrix
from recbole_llmsrec.evaluation.loaders import data_preparation, evaluation_row_users
from recbole_llmsrec.evaluation.sampler import PHASES, row_occurrences

FINGERPRINT_LENGTH = 12  # hexadecimal characters shown (48 bits)
ROW_CHUNK = 4096  # rows gathered and hashed at a time: bounds the memory of a fingerprint


def _tokens(dataset, field):
    return np.asarray(dataset.field2id_token[field], dtype=object)


def iter_evaluation_rows(loader, chunk=ROW_CHUNK):
    """Each row of ``loader`` as raw tokens, in evaluation order: ``[user, target, history...]``
    (sequential) or ``[user, sorted targets...]`` (general models: all of a user's targets in one
    row). A generator: sequential lists are gathered ``chunk`` rows at a time."""
    split = loader._dataset
    users, items = _tokens(split, split.uid_field), _tokens(split, split.iid_field)
    inter = split.inter_feat
    if is_sequential(split):
        row_users, targets = inter[split.uid_field].numpy(), inter[split.iid_field].numpy()
        lengths = inter[split.item_list_length_field].numpy()
        for start in range(0, len(inter), chunk):
            index = torch.arange(start, min(start + chunk, len(inter)))
            for row, history in zip(index.tolist(), item_lists(split, index).numpy()):
                yield [users[row_users[row]], items[targets[row]], *items[history[: lengths[row]]]]
        return
    targets = _targets_by_user(split)
    for user in evaluation_row_users(loader):
        yield [users[user], *sorted(targets.get(int(user), []))]


def _targets_by_user(split):
    """``{internal user id: the raw tokens of its target items}`` of a split's interactions."""
    items, inter = _tokens(split, split.iid_field), split.inter_feat
    targets = {}
    for user, item in zip(inter[split.uid_field].numpy(), inter[split.iid_field].numpy()):
        targets.setdefault(int(user), []).append(items[item])
    return targets


def iter_evaluation_candidates(loader):
    """Each row's sampled candidates as sorted raw tokens (target included), or ``None``: full sort
    (the whole catalogue), or RecBole's own sampler (a general model's, drawn while batches are
    collated)."""
    sampler = getattr(loader, "_sampler", None)
    if isinstance(loader, FullSortEvalDataLoader) or not hasattr(sampler, "candidates"):
        return None
    split = loader._dataset
    items = _tokens(split, split.iid_field)
    num = loader.neg_sample_num
    users, occurrences = row_occurrences(split.inter_feat[split.uid_field].numpy())
    targets = split.inter_feat[split.iid_field].numpy()
    return (
        sorted([items[target], *items[sampler.candidates(user, occurrence, num)]])
        for user, occurrence, target in zip(users, occurrences, targets)
    )


def phase_targets(loader):
    """Each user of ``loader``'s split with its sorted targets, as raw tokens, users sorted:
    ``[[user, targets...], ...]``. The same list for a general and a sequential model under the
    same files (their rows differ only in form: a sequential row also holds the history)."""
    split = loader._dataset
    users = _tokens(split, split.uid_field)
    targets = {str(users[user]): items for user, items in _targets_by_user(split).items()}
    return [[user, *sorted(map(str, targets[user]))] for user in sorted(targets)]


def iter_training_items(train_dataset, history):
    """Each user's training items (users x items CSR ``history``) as ``[user, sorted items...]``."""
    users, items = (
        _tokens(train_dataset, train_dataset.uid_field),
        _tokens(train_dataset, train_dataset.iid_field),
    )
    for user in range(1, history.shape[0]):
        start, end = history.indptr[user], history.indptr[user + 1]
        if end > start:
            yield [users[user], *sorted(items[history.indices[start:end]])]


def protocol_settings(config, phase):
    """The settings that decide how a phase's rows are scored, besides its rows and candidates."""
    return {
        "phase": phase,
        "split": config["eval_args"]["split"],
        "order": config["eval_args"]["order"],
        "mode": config["eval_args"]["mode"][phase],
        "eval_mask_history": bool(config["eval_mask_history"]),
        "eval_neg_exclude_history": bool(config["eval_neg_exclude_history"]),
        "eval_shuffle_history": bool(config["eval_shuffle_history"]),
    }


def _json_pieces(part, chunk=ROW_CHUNK):
    """``part`` as JSON text in pieces: a generator is written as the JSON array of its items, the
    same text ``json.dumps`` gives the list, without holding the list or the text."""

    def dumps(value):
        return json.dumps(value, ensure_ascii=False, default=str)

    if not isinstance(part, types.GeneratorType):
        yield dumps(part)
        return
    yield "["
    pieces = []
    for index, item in enumerate(part):
        pieces.append(dumps(item) if index == 0 else ", " + dumps(item))
        if len(pieces) == chunk:
            yield "".join(pieces)
            pieces = []
    yield "".join(pieces) + "]"


def digest(parts):
    """SHA-256 (hex) of a sequence of JSON-serialisable parts (or generators of them: JSON arrays),
    one line each."""
    sha = hashlib.sha256()
    for part in parts:
        for piece in _json_pieces(part):
            sha.update(piece.encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()


def data_fingerprint(config, train_data, valid_data, test_data, history):
    """``{"train", "valid", "test", "catalogue", "data", "targets"}``: SHA-256 prefixes of the
    training items, each evaluation phase (protocol settings, rows in order, candidates), the
    catalogue (item tokens ranked), all four together, and each phase's users with their targets
    (``phase_targets``: equal for a general and a sequential model under the same files, whose
    "data" always differ). ``history``: the training interactions (users x items CSR)."""
    catalogue = sorted(_tokens(train_data._dataset, train_data._dataset.iid_field)[1:].tolist())
    parts = {
        "catalogue": digest(catalogue),
        "train": digest(iter_training_items(train_data._dataset, history)),
    }
    for phase, loader in zip(PHASES, (valid_data, test_data)):
        parts[phase] = digest(
            [
                protocol_settings(config, phase),
                iter_evaluation_rows(loader),
                iter_evaluation_candidates(loader),
            ]
        )
    parts["data"] = digest([parts[key] for key in ("catalogue", "train", "valid", "test")])
    # outside "data": what a general and a sequential model share (README "Comparing with SASRec")
    parts["targets"] = digest([phase_targets(valid_data), phase_targets(test_data)])
    return {key: value[:FINGERPRINT_LENGTH] for key, value in parts.items()}


def build_data(config):
    """``(dataset, train, valid, test, fingerprint)``: the plugin's data pipeline for ``config``'s
    model, the same for every model (README "Comparing with SASRec"), and the fingerprint of what it
    evaluates."""
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    fingerprint = data_fingerprint(
        config, train_data, valid_data, test_data, training_matrix(train_data._dataset, sequential)
    )
    return dataset, train_data, valid_data, test_data, fingerprint


def fingerprint_line(fingerprint):
    """One log line: the combined fingerprint, then its parts, then the targets part."""
    detail = ", ".join(
        f"{key} {fingerprint[key]}" for key in ("catalogue", "train", "valid", "test")
    )
    targets = f"evaluation targets {fingerprint['targets']}"
    return f"data fingerprint: {fingerprint['data']} ({detail}; {targets})"
