"""The installed command line, as a user runs it: RecBole's flags, overrides, log and saved/."""

import glob
import subprocess
import sys

import pytest

from recbole_llmsrec.quick_start import main


def test_python_m_runs_sasrec_and_writes_log_and_checkpoint(small_sasrec_config, tmp_path):
    overrides = [f"--{k}={v}" for k, v in dict(small_sasrec_config, epochs=1).items()]
    run = subprocess.run(
        [sys.executable, "-m", "recbole_llmsrec", "--model=SASRec", "-d", "ml-100k", *overrides],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert "test result" in output and "ndcg@10" in output
    assert "will not be used in RecBole" not in output           # -d was consumed by our parser
    assert "FutureWarning" not in output                          # RecBole's known noise is silenced
    logs = glob.glob(str(tmp_path / "log" / "SASRec" / "*.log"))
    assert logs and "test result" in open(logs[0]).read()
    assert glob.glob(str(tmp_path / "saved" / "SASRec-*.pth"))


def test_malformed_override_is_rejected_with_the_expected_form(capsys):
    with pytest.raises(SystemExit):
        main(["--model=SASRec", "--epochs", "3"])
    assert "overrides are written --key=value" in capsys.readouterr().err
