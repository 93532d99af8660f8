"""The installed command line, as a user runs it: RecBole's flags, overrides, log and saved/."""

import glob
import re
import subprocess
import sys

import pytest

from recbole_llmsrec.quick_start import main


def test_python_m_runs_sasrec_and_writes_log_and_checkpoint(small_sasrec_config, tmp_path):
    overrides = [f"--{k}={v}" for k, v in dict(small_sasrec_config, epochs=1).items()]
    run = subprocess.run(
        [sys.executable, "-m", "recbole_llmsrec", "--model=SASRec", "-d", "ml-100k", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert "test result" in output and "ndcg@10" in output
    assert "will not be used in RecBole" not in output  # -d was consumed by our parser
    assert "FutureWarning" not in output  # RecBole's known noise is silenced
    assert "np.float64" not in output  # plain numbers, after the protocol and data the line names:
    assert re.search(
        r"test result.* \(protocol full; data [0-9a-f]{12}\): \{'recall@10': 0\.", output
    )
    logs = glob.glob(str(tmp_path / "log" / "SASRec" / "*.log"))
    assert logs and "test result" in open(logs[0]).read()
    header = [line.split("INFO  ", 1)[1] for line in open(logs[0]).read().splitlines()[:4]]
    assert header[0].startswith("command: ") and "--model=SASRec -d ml-100k" in header[0]
    assert header[1] == "config files (later ones win): (none)" and header[2].startswith(
        "protocol: "
    )
    assert f"log file: {logs[0]}" in output  # the console says where the log is
    assert glob.glob(str(tmp_path / "saved" / "SASRec-*.pth"))


def test_malformed_override_is_rejected_with_the_expected_form(capsys):
    with pytest.raises(SystemExit):
        main(["--model=SASRec", "--epochs", "3"])
    assert "overrides are written --key=value" in capsys.readouterr().err


def test_group_run_writes_both_latex_tables_for_sasrec_and_a_plugin_model(
    small_sasrec_config, tmp_path, capsys
):
    import yaml

    from recbole_llmsrec.group import group_main
    from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

    llm = build_tiny_llm(str(tmp_path / "tiny-llama"), hidden_size=32)
    settings = dict(
        small_sasrec_config,
        epochs=1,
        item_llm_path=llm,
        user_llm_path=llm,
        max_text_length=16,
        num_negatives=16,
        item_llm_gradient_checkpointing=False,
        user_llm_gradient_checkpointing=False,
        metrics=["Recall", "NDCG"],
        topk=[10],
        valid_metric="NDCG@10",
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    group_main(
        [
            "--model_list=SASRec,HLLM",
            "-d",
            "ml-100k",
            f"--config_files={tmp_path / 'run.yaml'}",
            f"--valid_latex={tmp_path / 'tables/valid.tex'}",
            f"--test_latex={tmp_path / 'tables/test.tex'}",
        ]
    )
    printed = capsys.readouterr().out
    assert "| Model | recall@10 | ndcg@10 |" in printed
    assert re.search(r"\| SASRec \| (\*\*)?0\.", printed) and re.search(
        r"\| HLLM \| (\*\*)?0\.", printed
    )
    for table in ("valid", "test"):
        tex = (tmp_path / "tables" / f"{table}.tex").read_text()
        assert "SASRec" in tex and "HLLM" in tex and "recall@10" in tex and "\\textbf" in tex


def test_help_names_the_plugin_models(capsys):
    from recbole_llmsrec.group import group_main

    for command in (main, group_main):
        with pytest.raises(SystemExit):
            command(["--help"])
        assert "ALLMRec, HLLM, LCRec, LLMSRec" in capsys.readouterr().out.replace(
            "\n", " "
        ).replace("  ", " ")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["--model=SASRek"],
            "model 'SASRek' is neither a recbole-llmsrec model .* Did you mean SASRec",
        ),
        (
            ["--model=SASRec", "--adam_betas=[0.9]", "--train_neg_sample_args=None"],
            "adam_betas=\\[0.9\\] is not allowed: it must be",
        ),
        (
            ["--model=SASRec", "--evaluate=no/such.pth", "--train_neg_sample_args=None"],
            "checkpoint file not found: no/such.pth",
        ),
    ],
)
def test_a_user_mistake_ends_with_one_line_and_exit_2_and_traceback_shows_it(
    arguments, message, capsys
):
    with pytest.raises(SystemExit) as stopped:
        main(["-d", "ml-100k", "--show_progress=False", *arguments])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert re.search(f"^error: {message}", error) and "Traceback" not in error
    with pytest.raises(ValueError if "checkpoint" not in message else FileNotFoundError):
        main(["-d", "ml-100k", "--show_progress=False", *arguments, "--traceback"])
