"""docs/extending.md, followed to the letter: its toy model is added through the registry, trains
and evaluates through the plugin on the data SASRec sees, and its setting is checked."""

import pathlib
import re
import sys

import pytest

from recbole_llmsrec import Config, registry, run_recbole
from recbole_llmsrec.fingerprint import build_data
from recbole_llmsrec.settings import SettingError

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "extending.md"
BLOCK = re.compile(r"<!-- (file: (?P<path>\S+)|run) -->\n```\w+\n(?P<code>.*?)```", re.S)


@pytest.fixture
def guide_model(tmp_path, monkeypatch):
    """The guide's files written under the (temporary) working directory, its registration run."""
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    blocks = list(BLOCK.finditer(GUIDE.read_text()))
    assert len(blocks) == 4
    for block in blocks:
        if block["path"]:
            path = tmp_path / block["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block["code"])
    (tmp_path / "my_models" / "__init__.py").touch()
    (tmp_path / "my_models" / "toyrec" / "__init__.py").touch()
    exec(next(b["code"] for b in blocks if not b["path"]), {})
    yield "ToyRec"
    for name in [m for m in sys.modules if m.startswith("my_models")]:
        del sys.modules[name]


def test_the_guides_model_trains_on_the_data_sasrec_sees(guide_model, small_sasrec_config):
    settings = {**small_sasrec_config, "epochs": 20, "learning_rate": 0.01}
    config = Config(model=guide_model, dataset="ml-100k", config_dict=settings)
    assert config["toy_size"] == 32  # the model's YAML
    trained = run_recbole(guide_model, "ml-100k", config_dict=settings)
    untrained = run_recbole(
        guide_model, "ml-100k", config_dict={**settings, "epochs": 0}, saved=False
    )
    *_, sasrec = build_data(Config(model="SASRec", dataset="ml-100k", config_dict=settings))
    assert trained["data_fingerprint"] == sasrec
    assert trained["test_result"]["ndcg@10"] > 2 * untrained["test_result"]["ndcg@10"]


def test_the_guides_setting_is_checked_before_any_data(guide_model):
    with pytest.raises(
        SettingError, match=r"toy_size=0 is not allowed: it must be an integer >= 1"
    ):
        Config(model=guide_model, dataset="ml-100k", config_dict={"toy_size": 0})
