"""Files written so that a crash never leaves a half-written one, and the clean-up of the partial
files a killed process leaves behind (standard library and torch only).
"""

import errno
import os
import re
import shutil
import socket
import uuid

import torch

from recbole_llmsrec.process import process_exists

PARTIAL_SUFFIX = ".tmp"


def _partial_name(path):
    """``{path}.{host}.{pid}.{random}.tmp``: the host and process that write it, so that a later run
    can tell a partial file of a killed process (removed) from one being written (left alone)."""
    return f"{path}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"


def atomic_write(path, write):
    """``write(temporary_path)`` in the same folder, then an atomic rename: never a half-written
    ``path``. A full disk is said as such (torch's writer only says ``basic_ios::clear: iostream
    error``)."""
    partial = _partial_name(path)
    try:
        write(partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as error:
        folder = os.path.dirname(os.path.abspath(path))
        free = _free_bytes(folder)
        if getattr(error, "errno", None) != errno.ENOSPC and (free is None or free >= 2**20):
            raise
        raise OSError(
            errno.ENOSPC,
            f"No space left on device while writing {path} "
            f"({free} bytes free in {folder}); nothing was replaced. Free some space or "
            "point checkpoint_dir elsewhere.",
        ) from error
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _free_bytes(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # the folder itself is gone: the original error says more
        return None


def remove_orphaned_partials(folder):
    """Remove the partial files (``_partial_name``) that processes of this host killed mid-write
    left in ``folder`` (``kill -9`` skips ``atomic_write``'s clean-up); returns how many. A partial
    file of a process still running, or of another host, is left alone."""
    pattern = re.compile(
        rf".+\.{re.escape(socket.gethostname())}\.(\d+)\.[0-9a-f]{{8}}"
        rf"{re.escape(PARTIAL_SUFFIX)}"
    )
    removed = 0
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.fullmatch(name)
        if match and not process_exists(int(match.group(1))):
            os.remove(os.path.join(folder, name))
            removed += 1
    return removed


def atomic_torch_save(obj, path):
    atomic_write(path, lambda partial: torch.save(obj, partial))
