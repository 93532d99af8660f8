"""A-LLMRec's stages 0 and 1, in one process or in each of several (run under torchrun).

``python distributed_stages.py OUT OPT_PATH MINILM_PATH [CF_CHECKPOINT]``: rank r of a run of W
processes writes ``OUT/stages-W-r.pt``: the rows of every training batch it computed (the teacher's
and stage 1's), the size of the teacher's training set, the logged stage-1 losses, and the teacher's
and the stage-1 item encoder's weights it ended with. Given ``CF_CHECKPOINT`` (the teacher of a
2-process run) the teacher is loaded and only stage 1 trains, which is how the test compares stage 1
in one and two processes. Stage 1 is made deterministic for that comparison: each user's negative
depends on the user alone (each rank draws its own otherwise), the text encoder has no dropout, the
auto-encoders are re-initialised from ``seed + rank`` (rank 1's differ: DDP's broadcast must make
them rank 0's), and the optimizer is SGD, whose step is lr x gradient (Adam's first step is lr x
sign(gradient), which turns float rounding of a near-zero gradient into a difference of lr).
"""

import contextlib
import logging
import os
import re
import sys
from unittest import mock

import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import init_seed
from torch import nn

from recbole_llmsrec import Config, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.distribution.process_group import rank
from recbole_llmsrec.evaluation.loaders import data_preparation
from recbole_llmsrec.models.allmrec.model import ALLMRec
from recbole_llmsrec.models.allmrec.trainer import ALLMRecTrainer
from recbole_llmsrec.models.cf_teacher import stage0

# 56 users (at most 21 ratings each); stage-1 batches of 11: five of 11 rows (shares of 6 and 5)
# and one of 1 (rank 1 computes a filler row with fraction 0)
USERS, STAGE1_BATCH = "[0,21]", 11
TEACHER = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1, "epochs": 1}


def settings(out, opt_path, minilm_path, cf_checkpoint):
    return {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "checkpoint_dir": os.path.join(out, "saved" if cf_checkpoint is None else "saved-single"),
        "llm_path": opt_path,
        "llm_dtype": "float32",
        "llm_gradient_checkpointing": False,
        "text_encoder_path": minilm_path,
        "text_encoder_max_length": 16,
        "user_inter_num_interval": USERS,
        "MAX_ITEM_LIST_LENGTH": 5,
        "cf_config": TEACHER,
        "cf_checkpoint": cf_checkpoint,
        "stage1_epochs": 2,
        "stage1_batch_size": STAGE1_BATCH,
        "stage1_learning_rate": 0.1,
    }


def fixed_negatives(self, users, num=None):
    """Negatives that depend on the user alone, whichever rank or batch draws them."""
    num = self.num_negatives if num is None else num
    return (users.unsqueeze(1) * 7 + torch.arange(1, num + 1)) % (self.n_items - 1) + 1


def sgd(params, lr, **_):
    return torch.optim.SGD(params, lr=lr)


def cloned(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


class Lines(logging.Handler):
    """Collects the logged stage-1 epoch losses."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.losses = []

    def emit(self, record):
        found = re.search(r"alignment loss: ([0-9.]+)", record.getMessage())
        if found:
            self.losses.append(float(found.group(1)))


def deterministic_prepare(prepare, record):
    """``prepare_stage1`` then no dropout and auto-encoders drawn from ``seed + rank``."""

    def prepared(self):
        prepare(self)
        for module in self.text_encoder.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        torch.manual_seed(self.config["seed"] + rank())
        for module in [*self.item_autoencoder.modules(), *self.text_autoencoder.modules()]:
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        record["item_encoder_before"] = cloned(self.item_autoencoder)

    return prepared


def with_sgd(alignment):
    def trained(self, *args, **kwargs):
        with mock.patch.object(torch.optim, "Adam", sgd):
            return alignment(self, *args, **kwargs)

    return trained


def counted(rows, function):
    """``function`` (a loss) appending the rows of each batch it computes to ``rows``."""

    def loss(self, interaction):
        rows.append(len(interaction))
        return function(self, interaction)

    return loss


def teacher_data(build_data, record):
    def built(config):
        data = build_data(config)
        record["teacher_samples"] = data[1].sample_size
        return data

    return built


@contextlib.contextmanager
def observed_and_deterministic(record):
    """The patches above, ``record`` filled with the rows of every batch computed."""
    patches = [
        (ALLMRec, "sample_negatives", fixed_negatives),
        (ALLMRec, "prepare_stage1", deterministic_prepare(ALLMRec.prepare_stage1, record)),
        (ALLMRecTrainer, "train_alignment", with_sgd(ALLMRecTrainer.train_alignment)),
        (stage0, "build_data", teacher_data(stage0.build_data, record)),
        (ALLMRec, "stage1_loss", counted(record["stage1_rows"], ALLMRec.stage1_loss)),
        (SASRec, "calculate_loss", counted(record["teacher_rows"], SASRec.calculate_loss)),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, value in patches:
            stack.enter_context(mock.patch.object(owner, name, value))
        yield


def main(out, opt_path, minilm_path, cf_checkpoint=None):
    world = int(os.environ.get("WORLD_SIZE", 1))
    config_dict = settings(out, opt_path, minilm_path, cf_checkpoint)
    config = Config(model="ALLMRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = ALLMRec(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "ALLMRec")(config, model)
    record = {"teacher_rows": [], "stage1_rows": [], "users": len(train_data._dataset.inter_feat)}
    lines, root = Lines(), logging.getLogger()
    level, _ = root.level, root.addHandler(lines)
    root.setLevel(logging.INFO)
    try:
        with observed_and_deterministic(record):
            trainer.run_pending_stages(train_data, show_progress=False)
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    record["losses"] = lines.losses
    record["teacher"], record["item_encoder"] = (
        cloned(model.cf_model),
        cloned(model.item_autoencoder),
    )
    torch.save(record, os.path.join(out, f"stages-{world}-{rank()}.pt"))
    return record


if __name__ == "__main__":
    main(*sys.argv[1:])
