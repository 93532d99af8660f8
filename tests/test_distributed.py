"""Several processes on CPU (gloo), launched as users launch them: torchrun and RecBole's
--nproc."""

import glob
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from recbole_llmsrec import run_recbole
from recbole_llmsrec.checkpoints import load_checkpoint
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(args, cwd, torchrun=True):
    command = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            *args,
        ]
        if torchrun
        else [sys.executable, *args]
    )
    run = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    output = run.stdout + run.stderr
    rank_errors = "\n".join(line for line in output.splitlines() if line.startswith("[rank"))
    assert run.returncode == 0, rank_errors[-6000:] + output[-2000:]
    return run


def logged_result(log_dir, label="test result"):
    """The metrics of the ``label`` line of the only log file under ``log_dir``."""
    logs = glob.glob(os.path.join(log_dir, "*.log"))
    assert len(logs) == 1, f"one log file expected (rank 0's), found {logs}"
    line = [line for line in open(logs[0]) if label in line][-1]
    return {key: float(value) for key, value in re.findall(r"'([^']+)': ([-0-9.e]+)", line)}


def logged_fingerprint(log_dir):
    """The data fingerprint the only log file under ``log_dir`` names."""
    (log,) = glob.glob(os.path.join(log_dir, "*.log"))
    return re.search(r"data fingerprint: ([0-9a-f]{12})", open(log).read()).group(1)


@pytest.fixture(scope="module")
def tiny_llms(tmp_path_factory):
    root = tmp_path_factory.mktemp("llms")
    return (
        build_tiny_llm(str(root / "llama"), hidden_size=32),
        build_tiny_llm(str(root / "opt"), hidden_size=32, architecture="opt"),
    )


def test_ddp_steps_equal_the_single_process_steps_and_fsdp_equals_ddp(
    tiny_llms, minilm_path, tmp_path
):
    sys.path.insert(0, HERE)
    import distributed_steps

    llama, opt = tiny_llms
    distributed_steps.main(str(tmp_path), llama, opt, minilm_path)
    launch(
        [os.path.join(HERE, "distributed_steps.py"), str(tmp_path), llama, opt, minilm_path],
        tmp_path,
    )
    single, ddp = torch.load(tmp_path / "steps-1.pt"), torch.load(tmp_path / "steps-2.pt")
    for name, reference in single.items():
        moved = max(
            (reference["after"][k] - reference["before"][k]).abs().max() for k in reference["after"]
        )
        assert moved > 1e-3, f"{name}: the step did not train"
        # DDP synchronises exactly what trains: never a frozen LLM, the teacher or the stage-1
        # encoder
        assert ddp[name]["synchronised"] == sorted(reference["after"])
        for strategy in (name, f"{name}-fsdp") if name in ("HLLM", "LCRec") else (name,):
            assert set(ddp[strategy]["after"]) == set(reference["after"])
            for key, value in reference["after"].items():
                torch.testing.assert_close(
                    ddp[strategy]["after"][key], value, atol=1e-5, rtol=0, msg=f"{strategy} {key}"
                )
    for strategy in (
        "HLLM",
        "HLLM-fsdp",
    ):  # the clamp reached the stored (under FSDP sharded) parameter
        assert ddp[strategy]["after"]["logit_scale"] <= 1.0
    assert not any(n.startswith(("llm.", "cf_model.")) for n in ddp["LLMSRec"]["synchronised"])
    assert not any(
        n.startswith(("llm.", "cf_model.", "item_autoencoder."))
        for n in ddp["ALLMRec"]["synchronised"]
    )
    # the frozen Item LLM's embedding cache is filled by rank 0 alone; rank 1 reads it
    encoded = ddp["HLLM-frozen"]["items_encoded"]
    assert encoded[0] > 0 and encoded[1] == 0


def sasrec_overrides(tmp_path):
    return [
        "--model=SASRec",
        "--dataset=ml-100k",
        "--use_gpu=False",
        "--show_progress=False",
        f"--checkpoint_dir={tmp_path / 'saved'}",
        "--user_inter_num_interval=[0,40]",
        "--MAX_ITEM_LIST_LENGTH=10",
        "--hidden_size=16",
        "--inner_size=32",
        "--n_layers=1",
        "--n_heads=1",
        "--epochs=2",
        "--train_batch_size=256",
    ]


def sasrec_config(tmp_path):
    """The settings of ``sasrec_overrides`` that an evaluation in one process needs."""
    return {
        "use_gpu": False,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "user_inter_num_interval": "[0,40]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
    }


def test_torchrun_sasrec_run_logs_once_and_its_checkpoint_evaluates_the_same_in_1_and_2_processes(
    tmp_path,
):
    # uni99 outside the history
    protocol = os.path.join(ROOT, "properties", "protocol", "llmsrec.yaml")
    launch(
        ["-m", "recbole_llmsrec", f"--config_files={protocol}", *sasrec_overrides(tmp_path)],
        tmp_path,
    )
    two_processes = logged_result(tmp_path / "log" / "SASRec")
    two_process_fingerprint = logged_fingerprint(tmp_path / "log" / "SASRec")
    checkpoints = glob.glob(str(tmp_path / "saved" / "SASRec-*.pth"))
    assert len(checkpoints) == 1  # written by rank 0 only
    # its config loads in one process
    assert load_checkpoint(checkpoints[0])["config"]["single_spec"]

    config = sasrec_config(tmp_path)
    evaluated = run_recbole(
        "SASRec",
        "ml-100k",
        config_file_list=[protocol],
        config_dict=config,
        evaluate=checkpoints[0],
    )
    one_process = evaluated["test_result"]
    assert one_process == two_processes
    # the same data, whatever the number of processes: the 2-process log names the same fingerprint
    assert two_process_fingerprint == evaluated["data_fingerprint"]["data"]
    (tmp_path / "evaluate").mkdir()
    launch(
        [
            "-m",
            "recbole_llmsrec",
            f"--config_files={protocol}",
            *sasrec_overrides(tmp_path),
            f"--evaluate={checkpoints[0]}",
        ],
        tmp_path / "evaluate",
    )
    assert logged_result(tmp_path / "evaluate" / "log" / "SASRec") == one_process
    assert len(glob.glob(str(tmp_path / "saved" / "SASRec-*.pth"))) == 1  # evaluating saves nothing


def hllm_settings(llama, tmp_path):
    """HLLM on a small slice of ml-100k, both LLMs the tiny Llama, 2 micro-batches per step."""
    return {
        "item_llm_path": llama,
        "user_llm_path": llama,
        "checkpoint_dir": str(tmp_path / "saved"),
        "user_inter_num_interval": "[0,25]",
        "MAX_ITEM_LIST_LENGTH": 5,
        "max_text_length": 12,
        "num_negatives": 16,
        "train_batch_size": 32,
        "gradient_accumulation_steps": 2,
    }


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_hllm_run_in_two_processes_evaluates_and_resumes_in_one_process(
    strategy, tiny_llms, tmp_path
):
    """DDP launched by RecBole's --nproc, FSDP by torchrun."""
    llama, _ = tiny_llms
    # full sort, history masked
    protocol = os.path.join(ROOT, "properties", "protocol", "hllm.yaml")
    profile = os.path.join(ROOT, "properties", "hllm-ml-100k-offline.yaml")
    settings = hllm_settings(llama, tmp_path)
    overrides = [f"--{key}={value}" for key, value in settings.items()]
    command = [
        os.path.join(ROOT, "run_recbole.py"),
        "--model=HLLM",
        f"--config_files={protocol} {profile}",
        *overrides,
    ]
    if strategy == "ddp":
        launch([*command, "--nproc=2", f"--port={free_port()}"], tmp_path, torchrun=False)
    else:
        launch([*command, "--distributed_strategy=fsdp"], tmp_path)
    two_processes = logged_result(tmp_path / "log" / "HLLM")
    checkpoint = glob.glob(str(tmp_path / "saved" / "HLLM-*.pth"))[0]

    evaluated = run_recbole(
        "HLLM",
        "ml-100k",
        config_file_list=[protocol, profile],
        config_dict=settings,
        evaluate=checkpoint,
    )["test_result"]
    assert evaluated == two_processes
    resumed = run_recbole(
        "HLLM",
        "ml-100k",
        config_file_list=[protocol, profile],
        config_dict={**settings, "epochs": 2},
        checkpoint=checkpoint,
    )
    assert resumed["test_result"] is not None
    if strategy == "fsdp":  # and back into two processes
        # the one-process resume wrote epoch 1 there only if its valid score improved (RecBole
        # saves the best epoch): a tiny random LLM gives no such promise, so read which it is
        saved_epoch = load_checkpoint(checkpoint)["epoch"]
        (tmp_path / "resume").mkdir()
        launch(
            [*command, "--distributed_strategy=fsdp", "--epochs=3", f"--checkpoint={checkpoint}"],
            tmp_path / "resume",
        )
        log = open(glob.glob(str(tmp_path / "resume" / "log" / "HLLM" / "*.log"))[0]).read()
        assert f"Resume training from epoch {saved_epoch + 1}" in log and "epoch 2 training" in log


def test_allmrec_under_torchrun_trains_its_teacher_and_stage1_once(
    tiny_llms, minilm_path, tmp_path
):
    _, opt = tiny_llms
    # uni19 outside the history
    protocol = os.path.join(ROOT, "properties", "protocol", "allmrec.yaml")
    profile = os.path.join(ROOT, "properties", "allmrec-ml-100k-offline.yaml")
    settings = {
        "llm_path": opt,
        "text_encoder_path": minilm_path,
        "text_encoder_max_length": 16,
        "checkpoint_dir": str(tmp_path / "saved"),
        "user_inter_num_interval": "[0,22]",
        "MAX_ITEM_LIST_LENGTH": 5,
        "stage1_batch_size": 256,
        "train_batch_size": 16,
    }
    overrides = [f"--{key}={value}" for key, value in settings.items()]
    launch(
        [
            "-m",
            "recbole_llmsrec",
            "--model=ALLMRec",
            f"--config_files={protocol} {profile}",
            "--cf_config={'epochs': 1, 'hidden_size': 16, 'inner_size': 16, 'n_layers': 1}",
            *overrides,
        ],
        tmp_path,
    )
    saved = tmp_path / "saved"
    # the teacher and stage 1: trained by both ranks (test_distributed_stages.py), written once
    assert len(glob.glob(str(saved / "SASRec-*.pth"))) == 1
    assert len(glob.glob(str(saved / "ALLMRec-stage1-*.pth"))) == 1
    two_processes = logged_result(tmp_path / "log" / "ALLMRec")
    evaluated = run_recbole(
        "ALLMRec",
        "ml-100k",
        config_file_list=[protocol, profile],
        config_dict={**settings, "cf_config": {"hidden_size": 16, "inner_size": 16, "n_layers": 1}},
        evaluate=[p for p in glob.glob(str(saved / "ALLMRec-*.pth")) if "stage1" not in p][0],
    )["test_result"]
    assert evaluated == two_processes


def test_llmsrec_under_torchrun_matches_its_one_process_evaluation(tiny_llms, tmp_path):
    llama, _ = tiny_llms
    # uni99 outside the history
    protocol = os.path.join(ROOT, "properties", "protocol", "llmsrec.yaml")
    profile = os.path.join(ROOT, "properties", "llmsrec-ml-100k-offline.yaml")
    settings = {
        "llm_path": llama,
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "user_inter_num_interval": "[0,22]",
        "MAX_ITEM_LIST_LENGTH": 5,
        "validations_per_epoch": 2,
        "projection_hidden_size": 32,
        "train_batch_size": 32,
        "llm_eval_batch_size": 64,
    }
    teacher = {"epochs": 1, "hidden_size": 16, "inner_size": 16, "n_layers": 1}
    launch(
        [
            "-m",
            "recbole_llmsrec",
            "--model=LLMSRec",
            f"--config_files={protocol} {profile}",
            f"--cf_config={teacher}",
            *[f"--{k}={v}" for k, v in settings.items()],
        ],
        tmp_path,
    )
    # the teacher, trained once
    assert len(glob.glob(str(tmp_path / "saved" / "SASRec-*.pth"))) == 1
    two_processes = logged_result(tmp_path / "log" / "LLMSRec")
    checkpoint = glob.glob(str(tmp_path / "saved" / "LLMSRec-*.pth"))[0]
    evaluated = run_recbole(
        "LLMSRec",
        "ml-100k",
        config_file_list=[protocol, profile],
        config_dict={**settings, "cf_config": teacher},
        evaluate=checkpoint,
    )
    assert evaluated["test_result"] == two_processes


def test_a_rank_that_stops_answering_fails_the_job_fast_but_once_per_job_waits_may_be_long(
    tmp_path,
):
    import signal
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "tests", "stalled_rank.py"), "0.1"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=tmp_path,
            )
        )
    try:
        started = time.monotonic()
        output, _ = processes[0].communicate(timeout=120)
        assert "once-per-job wait: done" in output, output[-2000:]  # 9 s alone: past the 6 s bound
        failed = re.search(r"failed after ([0-9.]+) s", output)
        assert failed and float(failed.group(1)) < 20, output[-2000:]
        assert time.monotonic() - started < 90
    finally:
        processes[1].send_signal(signal.SIGKILL)
        processes[1].wait()
