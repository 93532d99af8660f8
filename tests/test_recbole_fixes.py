"""Each RecBole fix of ``recbole_llmsrec/recbole_fixes/`` shown in a fresh interpreter: what breaks
without it, and that ``install()`` mends it. (Fixes whose effect needs a whole run are shown by the
tests their docstrings name.)"""

import pathlib
import subprocess
import sys

import pytest

FIXES = pathlib.Path(__file__).resolve().parent.parent / "recbole_llmsrec" / "recbole_fixes"


def fresh(code):
    """The last line ``code`` prints in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("install", ["", "import recbole_llmsrec; recbole_llmsrec.install();"])
def test_numpy_aliases_let_recbole_build_a_config(install):
    code = (
        f"{install}from recbole.config import Config\n"
        "try:\n    Config(model='BPR', dataset='ml-100k'); print('built')\n"
        "except AttributeError as error: print('AttributeError')"
    )
    assert fresh(code) == ("built" if install else "AttributeError")


@pytest.mark.parametrize("install", ["", "import recbole_llmsrec; recbole_llmsrec.install();"])
def test_anomaly_mode_is_off_after_recbole_imports_sine(install):
    code = (
        f"{install}import recbole.model.sequential_recommender, torch;"
        "print(torch.is_anomaly_enabled())"
    )
    assert fresh(code) == str(not install)


@pytest.mark.parametrize("install", ["", "import recbole_llmsrec; recbole_llmsrec.install();"])
def test_trainers_are_not_wrapped_in_ddp_when_built(install):
    code = (
        f"{install}import torch; from recbole.trainer.trainer import AbstractTrainer\n"
        "config = {'single_spec': False, 'local_rank': 0}\n"
        "try:\n"
        "    trainer = AbstractTrainer(config, torch.nn.Linear(1, 1))\n"
        "    print(hasattr(trainer, 'distributed_model'))\n"
        "except (RuntimeError, ValueError, AssertionError) as error: print('failed')"
    )
    assert fresh(code) == ("False" if install else "failed")


def test_recbole_noise_is_filtered_for_recbole_modules_only():
    code = (
        "import warnings, recbole_llmsrec; recbole_llmsrec.install();"
        "print(sum(f[0] == 'ignore' and f[3] is not None and f[3].pattern == r'recbole\\.'"
        " for f in warnings.filters))"
    )
    assert fresh(code) == "3"


@pytest.mark.parametrize("fix", sorted(p.stem for p in FIXES.glob("*.py") if p.stem != "__init__"))
def test_each_fix_says_what_breaks_its_target_and_its_test(fix):
    from recbole_llmsrec import recbole_fixes

    module = getattr(recbole_fixes, fix)
    assert module in recbole_fixes.FIXES
    doc = " ".join(module.__doc__.split())
    assert "RecBole 1.2.1" in doc
    tests = [word.strip("`.,();") for word in doc.split() if word.startswith("``tests/")]
    assert tests and all(pathlib.Path(FIXES.parent.parent, t).is_file() for t in tests), fix


def test_a_plugin_checkpoint_loads_safely_in_a_fresh_process(tmp_path, small_sasrec_config):
    """``load_checkpoint`` before any ``Config`` exists in the process (a separate evaluation
    script): it installs what loading needs, never asking for ``allow_unsafe``."""
    import torch

    from recbole_llmsrec import Config

    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
    torch.save({"config": config, "state_dict": {}}, tmp_path / "model.pth")
    code = (
        "from recbole_llmsrec.checkpoints import load_checkpoint;"
        f"print(load_checkpoint({str(tmp_path / 'model.pth')!r})['config'].model_class.__name__)"
    )
    assert fresh(code) == "SASRec"


RECBOLE_DATA = pathlib.Path(__import__("recbole").__file__).parent / "dataset_example" / "ml-100k"
AWKWARD_FILE = (
    "item_id:token\ttitle:token_seq\tprice:float\r\n"
    'i1\t"Quoted, title"\t1e-5\r\n'
    "i2\t\t0.1\r\n"
    'i3\tHe said "hi" twice\t\r\n'
    "\r\n"
    "i4\tÉté à Paris\t 3.25\r\n"
    "i5\tlast\t123456789.123456789\r\n"
)


def recbole_read_options(path):
    """The arguments RecBole 1.2.1's ``_load_feat`` passes to ``read_csv`` for ``path``."""
    header = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    dtype = {column: float if column.endswith(":float") else str for column in header}
    return dict(delimiter="\t", usecols=header, dtype=dtype, encoding="utf-8", engine="python")


@pytest.mark.parametrize("name", ["ml-100k.inter", "ml-100k.item", "ml-100k.user", "awkward"])
def test_the_c_parser_reads_every_atomic_file_into_the_python_parsers_frame(name, tmp_path):
    import pandas

    from recbole_llmsrec.recbole_fixes.csv_parser import PandasWithCParser

    path = RECBOLE_DATA / name
    if name == "awkward":
        path = tmp_path / "awkward.item"
        path.write_bytes(AWKWARD_FILE.encode("utf-8"))
    python_frame = pandas.read_csv(path, **recbole_read_options(path))
    c_frame = PandasWithCParser.read_csv(path, **recbole_read_options(path))
    pandas.testing.assert_frame_equal(c_frame, python_frame, check_exact=True)
    assert len(c_frame) > 4


def test_recbole_loads_atomic_files_with_the_c_parser_once_installed():
    code = (
        "import recbole_llmsrec; recbole_llmsrec.install()\n"
        "import recbole.data.dataset.dataset as module, pandas\n"
        "calls = []\noriginal = pandas.read_csv\n"
        "pandas.read_csv = lambda *a, **k: calls.append(k['engine']) or original(*a, **k)\n"
        "from recbole.config import Config\nfrom recbole.data.dataset import Dataset\n"
        "load = {'inter': ['user_id', 'item_id'], 'item': ['item_id', 'movie_title']}\n"
        "settings = {'state': 'error', 'load_col': load}\n"
        "Dataset(Config(model='BPR', dataset='ml-100k', config_dict=settings))\n"
        "print(calls)"
    )
    assert fresh(code) == "['c', 'c']"  # .inter and .item


def test_loaders_index_rows_with_a_range_and_draw_the_same_batches(
    small_sasrec_config, monkeypatch
):
    import recbole.data.dataloader.abstract_dataloader as loader_module
    import torch
    from recbole.utils import init_seed

    from recbole_llmsrec import Config
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.evaluation.loaders import data_preparation

    def batches(list_function):
        monkeypatch.setattr(loader_module, "list", list_function)
        config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
        init_seed(config["seed"], True)
        train = data_preparation(config, create_dataset(config))[0]
        init_seed(config["seed"], True)
        return train.sampler.data_source, [batch["item_id"] for batch in train]

    rows, fixed = batches(loader_module.list)
    plain_rows, plain = batches(list)
    assert isinstance(rows, range) and rows == range(len(plain_rows)) and type(plain_rows) is list
    assert len(fixed) == len(plain) > 1 and all(map(torch.equal, fixed, plain))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_shard_only_sampler_gives_each_rank_torchs_distributed_indices(
    shuffle, drop_last, monkeypatch
):
    from torch.utils.data.distributed import DistributedSampler

    from recbole_llmsrec.recbole_fixes import loader_indices
    from recbole_llmsrec.recbole_fixes.loader_indices import ShardOnlySampler

    monkeypatch.setattr(loader_indices, "INDICES_PER_LIST", 3)  # shares listed in several parts
    for rows, replicas in [(10, 3), (2, 5), (1, 8), (17, 4), (64, 8)]:
        for rank in range(replicas):
            torchs = DistributedSampler(
                range(rows), replicas, rank, shuffle=shuffle, seed=7, drop_last=drop_last
            )
            ours = DistributedSampler(
                range(rows), replicas, rank, shuffle=shuffle, seed=7, drop_last=drop_last
            )
            ours.__class__ = ShardOnlySampler
            for epoch in (0, 3):
                torchs.set_epoch(epoch), ours.set_epoch(epoch)
                assert list(ours) == list(torchs)


def test_repeatable_sampler_starts_without_a_set_per_user_and_draws_the_same(small_sasrec_config):
    import numpy as np
    from recbole.sampler import RepeatableSampler

    from recbole_llmsrec import Config
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.recbole_fixes.repeatable_sampler import no_used_ids

    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
    dataset = create_dataset(config)
    draws = {}
    for name, used_ids in (("fixed", no_used_ids), ("recbole", lambda s: [set()] * s.user_num)):
        RepeatableSampler.get_used_ids = used_ids
        sampler = RepeatableSampler(["valid"], dataset).set_phase("valid")
        initial = len(sampler.used_ids)
        np.random.seed(0)
        draws[name] = (initial, sampler.sample_by_user_ids([1, 2, 3], [5, 6, 7], 40).tolist())
    RepeatableSampler.get_used_ids = no_used_ids
    assert draws["fixed"][0] == 0 and draws["recbole"][0] == dataset.user_num
    assert draws["fixed"][1] == draws["recbole"][1]
