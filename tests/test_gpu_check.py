"""benchmarks/gpu_check.py keeps working without a GPU: its dry mode runs every check's reference
path on CPU and each passes within its tolerance."""

import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_passes_its_reference_paths_on_cpu(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    results = {row.split(" | ")[0][2:]: row.rstrip(" |").split(" | ")[-1] for row in rows[1:]}
    assert len(results) == 6
    assert sum(value == "PASS" for value in results.values()) == 5
    assert results["HLLM FSDP and DDP epochs over NCCL (2 processes)"].startswith("skipped")
    assert "figures: skipped on CPU" in out.stdout
