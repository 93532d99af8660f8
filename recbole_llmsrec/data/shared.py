"""One copy of the prepared sequential data for every process of a machine (issue 21, item 2).

In a distributed run each machine's first process (local rank 0) builds the dataset and its splits
as a one-process run does; it writes their arrays as ``.npy`` files and every other attribute as
JSON into ``{checkpoint_dir}/shared-data-{token}-node{n}`` (``token`` drawn by global rank 0 for
this job, so no other job's or earlier run's folder is ever read). The machine's other processes
wait for it (at most ``distributed_once_timeout_minutes``), then map the arrays copy-on-write: the
pages are the page cache's, one copy per machine, and a process that writes to an array gets a
private copy of the pages it writes. The folder is removed once every process has mapped it (the
mappings stay valid).

Nothing read decides what code runs: no pickle (``allow_pickle=False``), the classes are the
reader's own (its config's dataset class; enums from ``ENUMS``), and a value of any other type is
refused when written. ``field2token_id`` (token -> id, a dict per field) is not written: a reader
rebuilds a field's dict from ``field2id_token`` the first time it is asked for.
"""

import ctypes
import gc
import json
import os
import shutil
from collections.abc import Mapping
from logging import getLogger

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from recbole_llmsrec.data.sequences import cumulative_interactions
from recbole_llmsrec.distribution.process_group import from_rank0, rank, wait_for_rank0

ENUMS = {"FeatureType": FeatureType, "FeatureSource": FeatureSource}
SKIPPED = {"config", "logger", "field2token_id"}  # the reader's own config and logger; rebuilt


class TokenIds(Mapping):
    """``field2token_id`` rebuilt on demand: ``{token: id}`` of a field from its
    ``field2id_token``."""

    def __init__(self, id_tokens):
        self.id_tokens, self.built = id_tokens, {}

    def __getitem__(self, field):
        if field not in self.built:
            tokens = self.id_tokens[field]
            self.built[field] = {token: index for index, token in enumerate(tokens.tolist())}
        return self.built[field]

    def __iter__(self):
        return iter(self.id_tokens)

    def __len__(self):
        return len(self.id_tokens)


class StateWriter:
    """Encodes objects as JSON, arrays to ``.npy`` files of ``folder`` (each array once)."""

    def __init__(self, folder):
        self.folder, self.arrays = folder, {}

    def array(self, value):
        key = id(value)
        if key not in self.arrays:
            self.arrays[key] = (f"{len(self.arrays)}.npy", value)  # keeps the object alive
            array = value.numpy() if isinstance(value, torch.Tensor) else value
            np.save(os.path.join(self.folder, self.arrays[key][0]), array, allow_pickle=False)
        return self.arrays[key][0]

    def encode(self, value):
        if isinstance(value, np.generic):  # numpy scalars and strings (np.str_ keys)
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        for kind, name in ((torch.Tensor, "tensor"), (np.ndarray, "array")):
            if isinstance(value, kind):
                return {name: self.array(value)}
        if isinstance(value, Interaction):
            return {"interaction": {k: self.encode(v) for k, v in value.interaction.items()}}
        if sp.issparse(value):
            csr = value.tocsr()
            parts = [self.array(getattr(csr, name)) for name in ("data", "indices", "indptr")]
            return {"csr": parts, "shape": list(csr.shape)}
        return self.encode_container(value)

    def encode_container(self, value):
        for enum_name, enum in ENUMS.items():
            if isinstance(value, enum):
                return {"enum": enum_name, "value": value.value}
        if isinstance(value, (list, tuple)):
            kind = "list" if isinstance(value, list) else "tuple"
            return {kind: [self.encode(item) for item in value]}
        if isinstance(value, dict):
            return {"dict": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        raise TypeError(f"cannot share a {type(value).__name__} between processes")


class StateReader:
    """Decodes what ``StateWriter`` wrote, the arrays mapped copy-on-write (each once)."""

    def __init__(self, folder):
        self.folder, self.arrays = folder, {}

    def array(self, name):
        if name not in self.arrays:
            path = os.path.join(self.folder, os.path.basename(name))
            try:
                self.arrays[name] = np.load(path, mmap_mode="c", allow_pickle=False)
            except ValueError:  # an empty array cannot be mapped (an empty split): read it
                self.arrays[name] = np.load(path, allow_pickle=False)
        return self.arrays[name]

    def decode(self, value):
        if not isinstance(value, dict):
            return value
        if "tensor" in value:
            return torch.from_numpy(self.array(value["tensor"]))
        if "array" in value:
            return self.array(value["array"])
        if "interaction" in value:
            return Interaction({k: self.decode(v) for k, v in value["interaction"].items()})
        if "csr" in value:
            data, indices, indptr = (self.array(name) for name in value["csr"])
            matrix = sp.csr_matrix((data, indices, indptr), shape=tuple(value["shape"]), copy=False)
            matrix.check_format(full_check=True)  # indices in bounds before anything reads them
            return matrix
        if "enum" in value:
            return ENUMS[value["enum"]](value["value"])
        if "list" in value:
            return [self.decode(item) for item in value["list"]]
        if "tuple" in value:
            return tuple(self.decode(item) for item in value["tuple"])
        return {self.decode(k): self.decode(v) for k, v in value["dict"]}


def write_state(folder, datasets):
    """Write ``datasets`` (the dataset, then its splits) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    writer = StateWriter(folder)
    states = [
        {key: writer.encode(value) for key, value in vars(dataset).items() if key not in SKIPPED}
        for dataset in datasets
    ]
    with open(os.path.join(folder, "datasets.json"), "w", encoding="utf-8") as file:
        json.dump(states, file)


def read_state(folder, config, dataset_class):
    """The datasets ``write_state`` wrote into ``folder``, as ``dataset_class`` objects with this
    process's ``config`` and logger; an array written once (the store every split shares) is
    mapped once."""
    with open(os.path.join(folder, "datasets.json"), encoding="utf-8") as file:
        states = json.load(file)
    reader, datasets = StateReader(folder), []
    for state in states:
        dataset = dataset_class.__new__(dataset_class)
        for key, value in state.items():
            if key.startswith("__") or callable(getattr(dataset_class, key, None)):
                raise ValueError(f"{folder}: {key!r} is not a data attribute; refused")
            setattr(dataset, key, reader.decode(value))
        dataset.config, dataset.logger = config, getLogger()
        dataset.field2token_id = TokenIds(dataset.field2id_token)
        datasets.append(dataset)
    return datasets


def release_freed_memory():
    """Collect garbage and hand the heap's free memory back to the system (glibc's
    ``malloc_trim``; elsewhere a no-op): after the build the first process keeps only the mapped
    copy, not the heap pages its build freed."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def shared_dataset(config, dataset_class):
    """``dataset_class(config)`` with its splits built (``dataset.prebuilt_splits``) once per
    machine and mapped by its other processes (module docstring)."""
    token = from_rank0(config, os.urandom(8).hex())
    node = rank() - config["local_rank"]  # the global rank of the machine's first process
    folder = os.path.join(config["checkpoint_dir"], f"shared-data-{token}-node{node}")
    first = config["local_rank"] == 0
    if first:
        dataset = dataset_class(config)
        built = [dataset, *dataset.build()]
        cumulative_interactions(*built[1:])  # the protocol's histories, shared with the splits
        write_state(folder, built)
        del dataset, built  # the first process maps the files too: one copy, the page cache's
        release_freed_memory()
    wait_for_rank0()  # every machine's data is written
    datasets = read_state(folder, config, dataset_class)
    wait_for_rank0()  # every process has mapped it
    if first:
        shutil.rmtree(folder, ignore_errors=True)
    dataset, *splits = datasets
    for split in datasets:
        split.prebuilt_splits = None
    dataset.prebuilt_splits = splits
    return dataset
