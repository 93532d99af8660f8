"""Bad atomic files end in one clear error; killed and failed saves leave nothing behind and say
why."""

import errno
import os
import signal
import socket
import subprocess
import sys

import pytest

from recbole_llmsrec import Config
from recbole_llmsrec.data.atomic_files import AtomicFileError, check_atomic_files
from recbole_llmsrec.safe_write import atomic_torch_save, remove_orphaned_partials

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def dataset_config(tmp_path, content, name="shop", suffix="inter", raw=False):
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{suffix}"
    path.write_bytes(content if raw else content.encode("utf-8"))
    return Config(
        model="SASRec",
        dataset=name,
        config_dict={
            "data_path": str(tmp_path / "data"),
            "train_neg_sample_args": None,
            "load_col": {
                "inter": ["user_id", "item_id", "timestamp"],
                "item": ["item_id", "title"],
            },
        },
    ), path


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", r"is empty: an atomic file starts with a header line"),
        (b"user_id\titem_id\n1\t2\n", r"line 1: header field 'user_id' is not name:type"),
        (
            b"user_id:token\ttimestamp:float\n1\t5\n",
            r"line 1: no item_id column \(the header has user_id, ",
        ),
        (HEADER.encode() + b"u1\ti1\t1\nu1\ti\xe92\t2\n", r"line 3 is not valid utf-8"),
        (
            HEADER.encode() + b"u1\ti1\t1\nu2\t" + b"x" * 200_000 + b"\t2\n",
            r"line 3: a field of 200000 ",
        ),
    ],
)
def test_a_bad_inter_file_gets_one_error_naming_the_file_the_line_and_the_problem(
    content, problem, tmp_path
):
    config, path = dataset_config(tmp_path, content, raw=True)
    with pytest.raises(AtomicFileError, match=problem) as raised:
        check_atomic_files(config)
    assert str(raised.value).startswith(str(path))  # the file is named first


def test_an_item_file_is_checked_only_when_recbole_reads_it(tmp_path):
    config, _ = dataset_config(tmp_path, HEADER + "u1\ti1\t1\n")
    (tmp_path / "data" / "shop" / "shop.item").write_text("")
    with pytest.raises(AtomicFileError, match=r"shop\.item is empty"):
        check_atomic_files(config)
    config["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}  # .item not loaded
    check_atomic_files(config)


def test_a_partial_file_of_a_killed_save_is_removed_by_the_next_run(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    host = socket.gethostname()
    orphan = tmp_path / f"SASRec-x.pth.{host}.{dead.pid}.0123abcd.tmp"
    writing = tmp_path / f"SASRec-y.pth.{host}.{os.getpid()}.0123abcd.tmp"  # a live writer
    elsewhere = tmp_path / f"SASRec-z.pth.another-host.{dead.pid}.0123abcd.tmp"  # another machine
    for path in (orphan, writing, elsewhere):
        path.write_bytes(b"half a checkpoint")
    assert remove_orphaned_partials(str(tmp_path)) == 1
    assert not orphan.exists() and writing.exists() and elsewhere.exists()


def test_a_full_disk_is_said_as_such_and_replaces_nothing(tmp_path, monkeypatch):
    import torch

    path = tmp_path / "model.pth"
    atomic_torch_save({"w": torch.ones(2)}, str(path))
    before = path.read_bytes()

    def failing_save(obj, partial):  # what torch's writer raises when the disk fills up
        open(partial, "wb").write(b"half")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: "
            "basic_ios::clear: iostream error"
        )

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr("shutil.disk_usage", lambda folder: type("U", (), {"free": 4096})())
    with pytest.raises(
        OSError, match=r"No space left on device while writing .*model\.pth"
    ) as raised:
        atomic_torch_save({"w": torch.zeros(2)}, str(path))
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.pth"]


def test_interactions_whose_item_has_no_item_row_are_counted_not_dropped_silently(tmp_path, caplog):
    from recbole_llmsrec.data.dataset import create_dataset

    rows = "".join(f"u{u}\ti{(u + k) % 8}\t{k}\n" for u in range(6) for k in range(5))
    config, _ = dataset_config(tmp_path, HEADER + rows)
    (tmp_path / "data" / "shop" / "shop.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tTitle {i}\n" for i in range(6))
    )
    with caplog.at_level("WARNING"):
        dataset = create_dataset(config)
    missing = sum(1 for u in range(6) for k in range(5) if (u + k) % 8 >= 6)
    assert (
        f"{missing} of 30 interactions dropped because their user or item has no row" in caplog.text
    )
    assert len(dataset.inter_feat) == 30 - missing
