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
