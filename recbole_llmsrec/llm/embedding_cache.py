"""Item embeddings of a FROZEN encoder, computed once into
``<checkpoint_dir>/item_embedding_cache/`` and reused across runs, named by a SHA-256 of (encoder
identity, text template, every item text). Beside ``<key>.pt`` (loaded ``weights_only``) sits
``<key>.json`` (shape, dtype, keyed SHA-256), written atomically after it. A file that does not load
or match float32 ``[texts, dim]`` and its sidecar is named in a warning and recomputed: a damaged
cache costs one recomputation, never wrong embeddings.
"""

import hashlib
import hmac
import json
import os
from logging import getLogger

import torch
from tqdm import tqdm

from recbole_llmsrec.safe_write import atomic_torch_save, atomic_write

CACHE_SUBDIR = "item_embedding_cache"


def encoder_identity(model, path):
    """What identifies a loaded encoder's outputs: its source, class, config, dtype and weight
    files."""
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


KEY_FILE_VARIABLE = "RECBOLE_LLMSREC_CACHE_KEY"
DEFAULT_KEY_FILE = "~/.config/recbole_llmsrec/cache.key"
KEY_BYTES = 32


def cache_key_secret():
    """The secret keying the cache's checksums: 32 random bytes in a file outside ``checkpoint_dir``
    (``$RECBOLE_LLMSREC_CACHE_KEY``, default ``~/.config/recbole_llmsrec/cache.key``), created mode
    0600 on first use. Someone who can write ``checkpoint_dir`` but not this file cannot make a
    changed tensor pass: an unkeyed SHA-256 they could recompute."""
    path = os.path.expanduser(os.environ.get(KEY_FILE_VARIABLE, DEFAULT_KEY_FILE))
    key = _read_key(path)
    if key is None:  # absent, or not 32 bytes (damaged): a complete one replaces it atomically
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(os.urandom(KEY_BYTES))
        try:
            os.link(partial, path)  # never a half-written key; fails if another process made one
        except FileExistsError:
            if _read_key(path) is None:
                os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        key = _read_key(path)
    return key


def _read_key(path):
    try:
        with open(path, "rb") as file:
            key = file.read()
    except FileNotFoundError:
        return None
    return key if len(key) == KEY_BYTES else None


def _checksum(tensor):
    return hmac.new(cache_key_secret(), tensor.contiguous().numpy().tobytes(), "sha256").hexdigest()


def _sidecar(path):
    return os.path.splitext(path)[0] + ".json"


def _write_json(meta, path):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(meta, file)


def _load_checked(path, rows):
    """``(tensor, None)`` for a valid cache file, else ``(None, why it must not be used)``."""
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- truncated, corrupt, not weights-only: all unreadable
        return None, f"unreadable ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
        return None, f"not a dense tensor ({type(tensor).__name__})"
    if tensor.dim() != 2 or tensor.shape[0] != rows or tensor.dtype != torch.float32:
        return None, f"expected float32 [{rows}, dim], found {tensor.dtype} {list(tensor.shape)}"
    sidecar = _sidecar(path)
    try:
        with open(sidecar, encoding="utf-8") as file:
            meta = json.load(file)
        shape, dtype, sha256 = meta["shape"], meta["dtype"], meta["hmac_sha256"]
    except FileNotFoundError:
        return None, f"checksum file {sidecar} is missing"
    except (OSError, ValueError, TypeError, KeyError) as error:
        return None, f"checksum file {sidecar} is unparsable ({type(error).__name__}: {error})"
    found = (list(tensor.shape), str(tensor.dtype))
    if (shape, dtype) != found:
        return None, f"checksum file {sidecar} records {dtype} {shape}, not {found[1]} {found[0]}"
    if not hmac.compare_digest(sha256, _checksum(tensor)):
        return None, f"keyed SHA-256 (HMAC) does not match checksum file {sidecar}"
    return tensor, None


def cached_item_embeddings(
    texts,
    encode,
    *,
    cache_dir,
    encoder_id,
    template,
    batches,
    show_progress=False,
    desc="Encoding item texts",
):
    """Float ``[len(texts), dim]`` embeddings of ``texts`` by the frozen ``encode`` (``list[str] ->
    Tensor``), from the cache under ``cache_dir`` when valid; ``batches``: the rows of each forward,
    every row once."""
    path = os.path.join(cache_dir, CACHE_SUBDIR, f"{cache_key(encoder_id, template, texts)}.pt")
    if os.path.isfile(path):
        embeddings, problem = _load_checked(path, len(texts))
        if problem is None:
            getLogger().info(f"Item embeddings read from the cache {path}")
            return embeddings
        getLogger(__name__).warning(
            f"Item embedding cache {path} is invalid, recomputing: {problem}"
        )
    getLogger().info(
        f"Encoding {len(texts)} item texts with the frozen encoder into the cache {path}"
    )

    embeddings = _encode_in_batches(texts, encode, batches, show_progress, desc)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = {
        "shape": list(embeddings.shape),
        "dtype": str(embeddings.dtype),
        "hmac_sha256": _checksum(embeddings),
    }
    atomic_torch_save(embeddings, path)
    # the sidecar last: only now does the pair validate
    atomic_write(_sidecar(path), lambda partial: _write_json(meta, partial))
    return embeddings


@torch.no_grad()
def _encode_in_batches(texts, encode, batches, show_progress, desc):
    """``encode`` over ``batches`` (row lists; every row once), float32 on CPU in the rows'
    order."""
    order = torch.tensor([row for batch in batches for row in batch])
    if not torch.equal(order.sort().values, torch.arange(len(texts))):
        raise ValueError("batches must hold every row of texts exactly once.")
    parts = []
    for batch in tqdm(batches, desc=desc, disable=not show_progress):
        parts.append(encode([texts[i] for i in batch]).detach().float().cpu())
    return torch.cat(parts)[torch.argsort(order)]
