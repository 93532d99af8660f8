"""Item embeddings of a FROZEN encoder, computed once and reused across runs.

The cache file lives under ``<checkpoint_dir>/item_embedding_cache/`` and is named by a SHA-256 of
(the encoder's identity, the text template, every item text). Anything that could change the vectors
changes the name, so a stale file is never read; a hit runs zero encoder forward passes. Only use it
for an encoder that does not train: a fine-tuned encoder's embeddings go stale with every step.
"""

import hashlib
import json
import os

import torch
from tqdm import tqdm

CACHE_SUBDIR = "item_embedding_cache"


def encoder_identity(model, path):
    """What identifies a loaded encoder's outputs: its source, class, config, dtype and weight files."""
    identity = {
        "path": os.path.realpath(path) if os.path.isdir(path) else path,
        "class": type(model).__name__,
        "config": model.config.to_json_string(use_diff=False),
        "dtype": str(next(model.parameters()).dtype),
    }
    if os.path.isdir(path):  # a local checkpoint can be overwritten in place: fingerprint its files
        identity["files"] = sorted(
            (name, entry.st_size, entry.st_mtime_ns)
            for name in os.listdir(path)
            if os.path.isfile(os.path.join(path, name))
            for entry in [os.stat(os.path.join(path, name))]
        )
    return json.dumps(identity, sort_keys=True, default=str)


def cache_key(encoder_id, template, texts):
    digest = hashlib.sha256()
    for part in (encoder_id, template, json.dumps(list(texts))):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def cached_item_embeddings(texts, encode, *, cache_dir, encoder_id, template, batch_size,
                           show_progress=False, desc="Encoding item texts"):
    """Return a float tensor ``[len(texts), dim]`` of ``encode``'s embeddings, from the cache if present.

    Args:
        texts (list[str]): one text per item, index = item id.
        encode (callable): ``list[str] -> Tensor[n, dim]``, the frozen encoder's batch forward.
        cache_dir (str): normally the run's ``checkpoint_dir``.
        encoder_id (str): e.g. ``encoder_identity(model, path)`` plus anything else that shapes outputs
            (pooling, max length).
        template (str): the text template the item texts were built with.
        batch_size (int): texts per forward; texts are sorted by length first so batches pad little.
        show_progress (bool): a tqdm bar over batches (RecBole's ``show_progress``).
    """
    path = os.path.join(cache_dir, CACHE_SUBDIR, f"{cache_key(encoder_id, template, texts)}.pt")
    if os.path.isfile(path):
        return torch.load(path, map_location="cpu", weights_only=True)

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = []
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress):
        batch = [texts[i] for i in order[start:start + batch_size]]
        with torch.no_grad():
            chunks.append(encode(batch).detach().float().cpu())
    sorted_embeddings = torch.cat(chunks)
    embeddings = torch.empty_like(sorted_embeddings)
    embeddings[torch.tensor(order)] = sorted_embeddings

    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.tmp"
    torch.save(embeddings, partial)
    os.replace(partial, path)  # atomic: a crash never leaves a half-written cache behind
    return embeddings
