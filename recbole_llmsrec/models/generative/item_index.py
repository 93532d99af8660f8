"""Item indices of generative recommenders: every item 1..n_items-1 (RecBole's internal ids; 0 is
padding) gets a code, one integer per level, ``code[l]`` in ``range(codebook_sizes[l])``, and no two
items share one. ``item_index`` picks the scheme; the collision-freedom is by construction:

- ``random`` (P5's random indexing; Hua et al., "How to Index Item IDs for Recommendation Foundation
  Models", SIGIR-AP 2023): a permutation of 0..n_items-2 drawn from ``seed``, each number written in
  base ``item_index_codebook_size`` (K) with the fewest digits that hold them all. Distinct numbers
  have distinct digits.
- ``sequential`` (P5's sequential indexing): items numbered in the order they first appear when the
  users' training sequences are read one after another (by user id, each in time order); items never
  seen in training follow, by id; digits as ``random``, so consecutive items share leading digits.
  With K >= n_items - 1 it is one level, one token per item (P5's independent indexing).
- ``collaborative`` (P5's collaborative indexing, CID): the co-occurrence graph of the training
  interactions (X^T X, diagonal removed) cut recursively: a group of more than K items is split into
  at most K children (its connected components packed into K bins when it falls apart, else seeded
  spectral clustering; an even split by item id where that finds no split), a group of at most K
  gives each item its position. A node's children are all groups or all items, so an item's path is
  nobody's prefix; shorter codes are padded with the filler K, a value no real digit takes (a level
  holding fillers has K + 1 values).
- ``rqvae`` (LC-Rec): ``rqvae.rqvae_codes`` over the item text embeddings of a frozen encoder; its
  last step, ``rqvae.resolve_collisions``, makes the codes distinct.

``build_item_index`` stores each index as JSON under ``<checkpoint_dir>/item_index/``, named by a
SHA-256 of its identity (scheme, the keys it reads, seed, item tokens, the training data or the
encoder and its embeddings), and reads it back when the identity matches; a file that does not
parse or match, or whose codes collide or leave their range, is named in a warning and recomputed.
"""

import dataclasses
import hashlib
import json
import os
from logging import getLogger

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import eigh
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackError, eigsh
from sklearn.cluster import KMeans

from recbole_llmsrec.data.sequences import TARGET_ROW, is_compact, training_interactions
from recbole_llmsrec.distribution.process_group import (
    from_rank0,
    is_distributed,
    rank,
    wait_for_rank0,
)
from recbole_llmsrec.models.generative.index_settings import (
    INDEX_SCHEMES,
    INDEX_SETTINGS,
    check_index_settings,
)
from recbole_llmsrec.models.generative.rqvae import item_text_embeddings, rqvae_codes, train_rqvae
from recbole_llmsrec.safe_write import atomic_write

SCHEMES = INDEX_SCHEMES
INDEX_SUBDIR = "item_index"
NAME_HASH_CHARACTERS = 16  # of the identity's SHA-256 in the file name
#: every ``rqvae_*`` key, and the item-text keys that shape the embedded texts
RQVAE_KEYS = tuple(s.name for s in INDEX_SETTINGS if s.name.startswith("rqvae_")) + (
    "item_text_fields",
    "item_text_missing_value",
    "item_text_fallback",
)
#: the keys each scheme reads (besides ``seed``): a change to one of them recomputes its index
SCHEME_KEYS = {
    **dict.fromkeys(("random", "sequential", "collaborative"), ("item_index_codebook_size",)),
    "rqvae": RQVAE_KEYS,
}


@dataclasses.dataclass(frozen=True)
class ItemIndex:
    """``codes``: int64 ``[n_items, levels]``, row 0 (the padding item) all -1, no two items' rows
    equal; ``codebook_sizes``: level ``l``'s values lie in ``range(codebook_sizes[l])``."""

    scheme: str
    codes: torch.Tensor
    codebook_sizes: tuple


# ----- random and sequential: numbers written in base K -------------------------------------------
def digit_levels(count, base):
    """The fewest base-``base`` digits (at least 1) that write every number below ``count``."""
    levels = 1
    while base**levels < count:
        levels += 1
    return levels


def as_digits(numbers, base, levels):
    """``numbers`` (int64 array) as ``[len, levels]`` base-``base`` digits, most significant
    first."""
    powers = base ** np.arange(levels - 1, -1, -1, dtype=np.int64)
    return (numbers[:, None] // powers) % base


def numbered_codes(numbers, base):
    """``(codes, codebook_sizes)`` of distinct ``numbers`` 0..len-1, one per item 1..n_items-1."""
    levels = digit_levels(len(numbers), base)
    return as_digits(np.asarray(numbers, dtype=np.int64), base, levels), (base,) * levels


def random_codes(n_items, base, seed):
    """P5's random indexing: item ``i``'s number is ``permutation[i - 1]``, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return numbered_codes(torch.randperm(n_items - 1, generator=generator).numpy(), base)


def training_sequences(split):
    """``(users, items)`` of every training interaction of the sequential training ``split``, by
    user id, each user's in time order: the compact store's rows (sorted by user, then time, as
    RecBole sorts them) up to each user's last training target and among the training pairs (a
    trimmed split keeps them in ``history_matrix``); a materialised split's rows, by user then time,
    each user's earliest list first."""
    if not is_compact(split):
        return _materialised_sequences(split)
    store, rows = split.sequences, split.inter_feat
    users, items = store[split.uid_field].numpy(), store[split.iid_field].numpy()
    last_target = np.full(split.user_num, -1)
    np.maximum.at(last_target, rows[split.uid_field].numpy(), rows[TARGET_ROW].numpy())
    matrix = training_interactions(split).tocsr()
    pairs = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)) * split.item_num
    trained = np.isin(users.astype(np.int64) * split.item_num + items, pairs + matrix.indices)
    kept = (np.arange(len(users)) <= last_target[users]) & trained
    return users[kept], items[kept]


def _materialised_sequences(split):
    """RecBole's materialised rows: each user's rows by target time (ties in row order, RecBole's
    stable sort), the list of its earliest row (the items before it) then every row's target."""
    inter = split.inter_feat
    users, targets = inter[split.uid_field].numpy(), inter[split.iid_field].numpy()
    order = np.lexsort((np.arange(len(users)), inter[split.time_field].numpy(), users))
    users, targets = users[order], targets[order]
    earliest = order[np.r_[True, users[1:] != users[:-1]]]
    lengths = inter[split.item_list_length_field].numpy()[earliest]
    lists = inter[split.item_id_list_field].numpy()[earliest]
    row, column = np.nonzero(np.arange(lists.shape[1]) < lengths[:, None])
    all_users = np.concatenate([inter[split.uid_field].numpy()[earliest][row], users])
    all_items = np.concatenate([lists[row, column], targets])
    from_list = np.r_[np.zeros(len(row)), np.ones(len(users))]
    by_user = np.lexsort((np.arange(len(all_users)), from_list, all_users))
    return all_users[by_user], all_items[by_user]


def sequential_codes(items, n_items, base):
    """P5's sequential indexing of ``items`` (the training sequences, read one after another)."""
    seen, first = np.unique(items[items > 0], return_index=True)
    ordered = seen[np.argsort(first, kind="stable")]
    ordered = np.concatenate([ordered, np.setdiff1d(np.arange(1, n_items), ordered)])
    numbers = np.empty(n_items, dtype=np.int64)
    numbers[ordered] = np.arange(len(ordered))
    return numbered_codes(numbers[1:], base)


# ----- collaborative: recursive clustering of the co-occurrence graph -----------------------------
def co_occurrence(matrix):
    """Items x items: how many users share each pair (``matrix``: users x items), no diagonal."""
    graph = (matrix.T @ matrix).tocsr().astype(np.float64)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def _packed_components(graph, base):
    """Each node's bin when ``graph`` falls apart: components, largest first, each into the least
    filled of ``base`` bins (two or more bins used); None for a connected graph."""
    count, component = connected_components(graph, directed=False)
    if count == 1:
        return None
    sizes = np.bincount(component)
    load, bin_of = np.zeros(base, dtype=np.int64), np.empty(count, dtype=np.int64)
    for index in np.lexsort((np.arange(count), -sizes)):
        bin_of[index] = int(np.argmin(load))
        load[bin_of[index]] += sizes[index]
    return bin_of[component]


def _spectral_labels(graph, base, seed):
    """Ng-Jordan-Weiss spectral clustering of a connected ``graph`` into ``base`` clusters: the top
    ``base`` eigenvectors of D^-1/2 A D^-1/2, rows normalised, k-means (seeded); None if the
    eigensolver fails. Not scikit-learn's SpectralClustering: its shift-invert ARPACK took 15 s for
    717 ml-100k items at K = 256."""
    scale = sp.diags(1 / np.sqrt(np.asarray(graph.sum(1)).ravel()))
    normalised = scale @ graph @ scale
    size = normalised.shape[0]
    try:
        # ARPACK (memory O(nnz + size x base)) unless its Lanczos basis of 2 x base + 1 vectors
        # would be as large as the matrix: then the dense solver is the cheaper one
        if size <= 2 * base + 1:
            vectors = eigh(normalised.toarray(), subset_by_index=[size - base, size - 1])[1]
        else:
            start = np.random.default_rng(seed).uniform(-1, 1, size)
            vectors = eigsh(normalised, k=base, which="LA", v0=start)[1]
    except (np.linalg.LinAlgError, ArpackError):
        return None
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = vectors / np.where(norms > 0, norms, 1)
    return KMeans(n_clusters=base, random_state=seed).fit_predict(rows)


def _children(graph, group, base, seed):
    """The children of ``group`` (sorted item ids, more than ``base``): at least two, at most
    ``base`` non-empty groups, ordered by their smallest item."""
    sub = graph[group][:, group]
    labels = _packed_components(sub, base)
    if labels is None:
        labels = _spectral_labels(sub, base, seed)
    if labels is None or len(np.unique(labels)) < 2:  # no split found: an even one, by item id
        labels = np.arange(len(group)) * base // len(group)
    _, first = np.unique(labels, return_index=True)
    return [group[labels == labels[index]] for index in np.sort(first)]


def collaborative_codes(matrix, base, seed):
    """P5's collaborative indexing of the items of ``matrix`` (users x items, training only)."""
    graph, paths = co_occurrence(matrix), {}
    pending = [(np.arange(1, matrix.shape[1]), ())]
    while pending:
        group, path = pending.pop()
        if len(group) <= base:
            paths.update((int(item), (*path, position)) for position, item in enumerate(group))
            continue
        for digit, child in enumerate(_children(graph, group, base, seed)):
            pending.append((child, (*path, digit)))
    depth = max(map(len, paths.values()), default=1)
    codes = np.full((matrix.shape[1] - 1, depth), base, dtype=np.int64)
    for item, path in paths.items():
        codes[item - 1, : len(path)] = path
    return codes, tuple(base + int((codes[:, level] == base).any()) for level in range(depth))


# ----- building, saving and reading ---------------------------------------------------------------
def _sha256(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _matrix_sha256(matrix):
    """The training pairs, whatever the index dtype of ``matrix``'s CSR."""
    matrix = matrix.tocsr().sorted_indices()
    return _sha256(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64))


def _scheme_inputs(config, train):
    """``(identity of the inputs, a function computing (codes [n_items - 1, levels], sizes))``."""
    scheme, n_items = config["item_index"], train.item_num
    base, seed = config["item_index_codebook_size"], config["seed"]
    if scheme == "random":
        return {}, lambda: random_codes(n_items, base, seed)
    if scheme == "sequential":
        users, items = training_sequences(train)
        data = _sha256(_matrix_sha256(training_interactions(train)).encode(), users, items)
        return {"data_sha256": data}, lambda: sequential_codes(items, n_items, base)
    if scheme == "collaborative":
        matrix = training_interactions(train)
        return (
            {"data_sha256": _matrix_sha256(matrix)},
            lambda: collaborative_codes(matrix, base, seed),
        )
    embeddings, encoder = item_text_embeddings(config, train)
    sizes = tuple(config["rqvae_codebook_sizes"])

    def rqvae_index():
        return rqvae_codes(train_rqvae(embeddings, config), embeddings, config).numpy(), sizes

    return {"encoder": encoder, "embeddings_sha256": _sha256(embeddings.numpy())}, rqvae_index


def _identity(config, tokens, inputs):
    """What the index depends on, as JSON reads it back (lists, not tuples)."""
    scheme = config["item_index"]
    identity = {
        "scheme": scheme,
        "settings": {key: config[key] for key in SCHEME_KEYS[scheme]},
        "seed": config["seed"],
        "item_tokens_sha256": hashlib.sha256(json.dumps(tokens).encode()).hexdigest(),
        **inputs,
    }
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _index_path(config, identity):
    name = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    file_name = f"{identity['scheme']}-{name[:NAME_HASH_CHARACTERS]}.json"
    return os.path.join(config["checkpoint_dir"], INDEX_SUBDIR, file_name)


def _exact_ints(values):
    return all(type(value) is int for value in values)  # JSON's true/false are not codes


def _codes_problem(codes, sizes, n_items):
    """Why ``codes``/``sizes`` (as read from JSON) are not an index of ``n_items``, or None."""
    if not (isinstance(sizes, list) and sizes and _exact_ints(sizes) and min(sizes) > 0):
        return f"codebook_sizes {str(sizes)[:80]} is not a list of positive integers"
    if not isinstance(codes, list) or len(codes) != n_items - 1:
        return f"it does not hold a code for each of the {n_items - 1} items"
    if not all(
        isinstance(row, list) and len(row) == len(sizes) and _exact_ints(row) for row in codes
    ):
        return f"a code is not a list of {len(sizes)} integers"
    array = np.array(codes, dtype=np.int64).reshape(n_items - 1, len(sizes))
    if ((array < 0) | (array >= np.array(sizes))).any():
        return "a code lies outside codebook_sizes"
    if len(np.unique(array, axis=0)) != len(array):
        return "two items share a code"
    return None


def _read_index(path, identity, tokens):
    """``(ItemIndex, None)`` from a valid file at ``path``, else ``(None, why it is not used)``."""
    try:
        with open(path, encoding="utf-8") as file:
            stored = json.load(file)
    except (OSError, ValueError) as error:
        return None, f"unreadable ({type(error).__name__}: {' '.join(str(error).split())[:160]})"
    if not isinstance(stored, dict):
        return None, "not a JSON object"
    if stored.get("identity") != identity or stored.get("scheme") != identity["scheme"]:
        return None, "its identity (scheme, settings, seed or data) differs"
    if stored.get("item_tokens") != tokens:
        return None, "its item tokens differ from the dataset's"
    problem = _codes_problem(stored.get("codes"), stored.get("codebook_sizes"), len(tokens) + 1)
    if problem:
        return None, problem
    return _item_index(identity["scheme"], stored["codes"], stored["codebook_sizes"]), None


def _item_index(scheme, codes, sizes):
    """An ``ItemIndex`` of the codes of items 1..n-1 (``[n - 1, levels]``), padding row -1."""
    codes = torch.as_tensor(np.asarray(codes, dtype=np.int64).reshape(len(codes), len(sizes)))
    padding = torch.full((1, len(sizes)), -1, dtype=torch.long)
    return ItemIndex(scheme, torch.cat([padding, codes]), tuple(int(size) for size in sizes))


def _write_index(path, index, tokens, identity):
    stored = {
        "scheme": index.scheme,
        "codebook_sizes": list(index.codebook_sizes),
        "codes": index.codes[1:].tolist(),
        "item_tokens": tokens,
        "identity": identity,
    }

    def write(partial):
        with open(partial, "w", encoding="utf-8") as file:
            json.dump(stored, file)

    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, write)


def _read_or_compute(config, train, tokens):
    """``(index, path, identity)``: the stored index of this identity when valid, else computed,
    checked and stored."""
    inputs, compute = _scheme_inputs(config, train)
    identity = _identity(config, tokens, inputs)
    path = _index_path(config, identity)
    if os.path.isfile(path):
        index, problem = _read_index(path, identity, tokens)
        if problem is None:
            getLogger().info(f"Item index read from {path}")
            return index, path, identity
        getLogger(__name__).warning(f"Item index {path} is not used, recomputing: {problem}")
    codes, sizes = compute()
    problem = _codes_problem(np.asarray(codes).tolist(), list(sizes), train.item_num)
    if problem:  # never stored or returned: every scheme guarantees distinct codes in range
        raise RuntimeError(f"the {config['item_index']} item index is invalid: {problem}")
    index = _item_index(config["item_index"], codes, sizes)
    _write_index(path, index, tokens, identity)
    getLogger().info(f"Item index ({index.scheme}, sizes {index.codebook_sizes}) written: {path}")
    return index, path, identity


def build_item_index(config, train_dataset):
    """The ``item_index`` scheme's codes of every item of the training split ``train_dataset``
    (module docstring), read from ``<checkpoint_dir>/item_index/`` when stored with the same
    identity. In a distributed run rank 0 alone computes and writes; the others wait, then read the
    file rank 0 names, checked against rank 0's identity."""
    check_index_settings(config)
    tokens = [str(token) for token in train_dataset.field2id_token[train_dataset.iid_field][1:]]
    index = path = identity = None
    if rank() == 0:
        index, path, identity = _read_or_compute(config, train_dataset, tokens)
    if is_distributed(config):
        wait_for_rank0()
        path, identity = from_rank0(config, (path, identity))
        if index is None:
            index, problem = _read_index(path, identity, tokens)
            if problem:
                raise RuntimeError(f"the item index rank 0 wrote, {path}, is not usable: {problem}")
    return index
