"""The processes of one machine share one copy of the prepared data (``data.shared``, issue 21
item 2): the first builds it, the others map it, and every process sees what a one-process run
sees."""

import json
import os
import pathlib
import subprocess
import sys

from test_distributed import launch

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
