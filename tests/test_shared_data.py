"""The processes of one machine share one copy of the prepared data (``data.shared``, issue 21
item 2): the first builds it, the others map it, and every process sees what a one-process run
sees."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_distributed import launch

from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.data.sequences import CompactSequentialDataset
from recbole_llmsrec.data.shared import read_state, write_state

WORKER = pathlib.Path(__file__).resolve().parent / "shared_data_worker.py"


def reports(folder):
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_processes_share_one_build_that_equals_the_one_process_data(tmp_path):
    models = ["SASRec", "LLMSRec"]  # RecBole's sequential dataset, the plugin's training split
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    alone.mkdir(), shared.mkdir()
    subprocess.run(
        [sys.executable, str(WORKER), str(alone), *models],
        check=True,
        cwd=alone,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    references = json.loads((alone / "rank0.json").read_text())
    launch([str(WORKER), str(shared), *models], shared)
    for model, reference in references.items():
        first, second = (report[model] for report in reports(shared))
        assert first["augmentations"] == 1 and second["augmentations"] == 0  # built once
        assert first["mapped"] and second["mapped"]  # both map the files the first wrote
        for key in ("fingerprint", "valid_rows", "train_rows", "history_nonzeros", "batch_items"):
            assert first[key] == second[key] == reference[key], (model, key)
        assert reference["augmentations"] == 1 and not reference["mapped"]
        # each rank lists only its share of the rows (recbole_fixes.loader_indices)
        assert first["sampler"] == second["sampler"] == "ShardOnlySampler"
    assert not any(path.name.startswith("shared-data-") for path in (shared / "saved").iterdir())


def test_a_state_naming_a_method_or_a_dunder_is_refused(tmp_path, small_sasrec_config):
    """A forged ``datasets.json`` cannot shadow a method with data (a late crash) or set
    ``__class__``: read_state refuses it before setting anything."""
    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
    dataset = create_dataset(config)
    write_state(tmp_path, [dataset, *dataset.build()])
    assert len(read_state(tmp_path, config, CompactSequentialDataset)) == 4
    states = json.loads((tmp_path / "datasets.json").read_text())
    for key in ("build", "__class__"):
        forged = [{**states[0], key: {"list": []}}]
        (tmp_path / "datasets.json").write_text(json.dumps(forged))
        with pytest.raises(ValueError, match="not a data attribute"):
            read_state(tmp_path, config, CompactSequentialDataset)
