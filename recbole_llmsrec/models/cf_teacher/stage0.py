"""Stage 0 of LLM-SRec and A-LLMRec: a RecBole sequential model (``cf_model``, default the papers'
SASRec) as the frozen CF teacher, loaded from ``cf_checkpoint`` or pre-trained with ``cf_config``
over the run's config (same data, split and ``MAX_ITEM_LIST_LENGTH``). Any model with an item
embedding table and a user vector scored against it (A-LLMRec's "any CF-RecSys") qualifies. Always
in eval mode: the originals left dropout on.
"""

from logging import getLogger

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import set_color
from torch import nn

from recbole_llmsrec.checkpoints import check_checkpoint_data, data_ids, load_checkpoint
from recbole_llmsrec.config import derived_config
from recbole_llmsrec.fingerprint import build_data, fingerprint_line
from recbole_llmsrec.llm.loading import freeze
from recbole_llmsrec.registry import get_model, is_plugin_model
from recbole_llmsrec.training.trainer import get_trainer

# Dataset settings that must match between the teacher's run and this run (item ids must be the
# same).
MATCHING_DATASET_KEYS = (
    "dataset",
    "user_inter_num_interval",
    "item_inter_num_interval",
    "val_interval",
    "rm_dup_inter",
    "filter_inter_by_user_or_item",
    "MAX_ITEM_LIST_LENGTH",
)
# of eval_args: the teacher must never see valid/test data
SPLIT_KEYS = (
    "split",
    "order",
    "group_by",
)


def data_differences(config, other):
    """``{key: (other's value, config's value)}`` for the data and split settings that differ."""
    differences = {k: (other[k], config[k]) for k in MATCHING_DATASET_KEYS if other[k] != config[k]}
    differences.update(
        {
            f"eval_args.{k}": (other["eval_args"].get(k), config["eval_args"].get(k))
            for k in SPLIT_KEYS
            if other["eval_args"].get(k) != config["eval_args"].get(k)
        }
    )
    return differences


def teacher_class(name):
    """The RecBole sequential model class named ``name`` (``cf_model``), or a ``ValueError`` saying
    why."""
    model_class = get_model(name)
    if not issubclass(model_class, SequentialRecommender) or is_plugin_model(model_class):
        raise ValueError(
            f"cf_model={name!r} is not a RecBole sequential model: the teacher reads the "
            "user's item sequence (e.g. SASRec, GRU4Rec, NARM, BERT4Rec)."
        )
    return model_class


def user_representation(teacher, item_seq, item_seq_len):
    """The teacher's user vector ``[B, d]``: the state its ``full_sort_predict`` scores items
    with."""
    if hasattr(teacher, "reconstruct_test_data"):  # BERT4Rec: a [mask] after the history (shifted
        item_seq = teacher.reconstruct_test_data(item_seq, item_seq_len)  # left by one), read there
        return teacher.gather_indexes(teacher(item_seq), item_seq_len - 1)
    return teacher(item_seq, item_seq_len)


@torch.no_grad()
def checked_teacher(teacher):
    """``teacher`` (frozen) if it has ``item_embedding`` and a user vector of its width, else a
    ValueError."""
    name, embedding = type(teacher).__name__, getattr(teacher, "item_embedding", None)
    problem = None if isinstance(embedding, nn.Embedding) else "no item_embedding table"
    try:
        sequence = torch.zeros(1, teacher.max_seq_length, dtype=torch.long)
        sequence[0, 0] = 1
        shape = list(user_representation(freeze(teacher), sequence, torch.tensor([1])).shape)
        if not problem and shape != [1, embedding.embedding_dim]:
            problem = f"a user vector of shape {shape}, not [1, {embedding.embedding_dim}]"
    except Exception as error:  # noqa: BLE001 -- any failure means the model cannot serve as teacher
        problem = f"an error from forward(item_seq, item_seq_len) ({type(error).__name__}: {error})"
    if problem:
        raise ValueError(
            f"cf_model={name} cannot be the teacher: it gives {problem}. A teacher is a "
            "RecBole sequential model whose forward(item_seq, item_seq_len) returns the "
            "user vector it scores against item_embedding (SASRec, GRU4Rec, NARM, BERT4Rec)."
        )
    return teacher


def teacher_config(config):
    """The run's config for ``cf_model`` with ``cf_config`` over it (``derived_config``); a partial
    ``cf_config.eval_args`` completes the run's. Data, split or sequence length changes are
    refused."""
    # the teacher is trained and early-stopped as usual even when the run's evaluation is a
    # diagnostic
    overrides = {
        "eval_shuffle_history": False,
        "eval_item_groups": None,
        **(config["cf_config"] or {}),
    }
    if isinstance(overrides.get("eval_args"), dict):
        overrides["eval_args"] = {**config["eval_args"], **overrides["eval_args"]}
    cf_config = derived_config(config, teacher_class(config["cf_model"]).__name__, overrides)
    differences = data_differences(config, cf_config)
    if differences:
        detail = ", ".join(f"{k}: {a!r} vs the run's {b!r}" for k, (a, b) in differences.items())
        raise ValueError(
            f"cf_config changes the teacher's data ({detail}): the teacher trains on the "
            "run's data and split. Remove these keys from cf_config."
        )
    if cf_config["loss_type"] != "CE":
        raise ValueError(
            "cf_config.loss_type must be CE: the teacher reuses the run's training data, "
            "which has no sampled negatives (train_neg_sample_args: ~)."
        )
    return cf_config


def build_teacher(config, dataset):
    """``(teacher, loaded)``: a frozen ``cf_model``, loaded from ``cf_checkpoint`` when given."""
    path = config["cf_checkpoint"]
    if not path:
        cf_config = teacher_config(config)
        return checked_teacher(teacher_class(cf_config["model"])(cf_config, dataset)), False
    checkpoint = load_checkpoint(path, map_location="cpu")
    cf_config = checkpoint["config"]
    try:
        teacher_class(cf_config["model"])
    except ValueError as error:
        # e.g. an LLMSRec checkpoint: advising cf_model: LLMSRec would fail too
        raise ValueError(
            f"cf_checkpoint={path} holds a {cf_config['model']}, which cannot be the "
            f"teacher: {error}"
        ) from None
    if cf_config["model"] != config["cf_model"]:
        raise ValueError(
            f"cf_checkpoint={path} is a {cf_config['model']} checkpoint but cf_model is "
            f"{config['cf_model']}: set cf_model: {cf_config['model']} to use it."
        )
    cf_config.final_config_dict["device"] = config["device"]
    teacher = checked_teacher(teacher_class(cf_config["model"])(cf_config, dataset))
    check_same_data(
        config,
        cf_config,
        checkpoint["state_dict"]["item_embedding.weight"].shape[0],
        teacher.item_embedding.num_embeddings,
        path,
    )
    check_checkpoint_data(checkpoint.get("data"), data_ids(dataset), path, "cf_checkpoint")
    teacher.load_state_dict(checkpoint["state_dict"])
    getLogger().info(set_color(f"{cf_config['model']} teacher loaded from", "green") + f": {path}")
    return teacher, True


def check_same_data(config, saved_config, n_items, expected_rows, path, key="cf_checkpoint"):
    """Refuse a checkpoint (``key``) whose run used other data than this one, naming the difference;
    ``n_items``: its item table's rows, ``expected_rows`` those of this run's teacher."""
    mismatched = data_differences(config, saved_config)
    if mismatched:
        detail = ", ".join(
            f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in mismatched.items()
        )
        raise ValueError(
            f"{key}={path} was trained on other data ({detail}). Use a checkpoint of the "
            f"same dataset and settings, or set {key}: ~ to train one."
        )
    if n_items != expected_rows:
        raise ValueError(
            f"{key}={path} has {n_items} item embeddings but dataset {config['dataset']} "
            f"needs {expected_rows}: it was trained on another version of the data. Set "
            f"{key}: ~ to train one."
        )


def pretrain_teacher(config, show_progress=False):
    """Pre-train ``cf_model`` with RecBole's Trainer and SequentialDataset (every prefix a sample)
    on the run's split and protocol (training interactions only); returns the best checkpoint's
    path.

    In a distributed run every rank calls it: the teacher's config is the run's (``teacher_config``
    keeps its processes), so its data is built on every rank as the run's own is and the plugin's
    ``Trainer`` trains it with DDP (each rank its ``DistributedSampler`` shard of every epoch, a
    global batch of ``train_batch_size`` x processes, validation rows gathered from every rank so
    that every rank stops at the same epoch). Rank 0 names and writes the checkpoints, so the path
    returned is the same on every rank and its file is on disk when it returns."""
    logger = getLogger()
    cf_config = teacher_config(config)
    name = cf_config["model"]
    logger.info(
        set_color(f"Pre-training the {name} teacher (cf_config)", "green")
        + f": {config['cf_config']}"
    )
    _, train_data, valid_data, test_data, fingerprint = build_data(cf_config)
    logger.info(f"{name} teacher {fingerprint_line(fingerprint)}")
    teacher = teacher_class(name)(cf_config, train_data._dataset).to(cf_config["device"])
    trainer = get_trainer(cf_config["MODEL_TYPE"], name)(cf_config, teacher)
    trainer.data_ids = data_ids(train_data._dataset, fingerprint)
    trainer.fit(train_data, valid_data, saved=True, show_progress=show_progress)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=show_progress)
    logger.info(set_color(f"{name} teacher test result", "yellow") + f": {test_result}")
    logger.info(f"Reuse this teacher with cf_checkpoint: {trainer.saved_model_file}")
    return trainer.saved_model_file


def show_loaded_teacher_settings(config):
    """With ``cf_checkpoint`` set, ``cf_config`` is not used: it is replaced, in the config the run
    logs and saves, by the loaded teacher's values of the same keys, and the log says so."""
    path = config["cf_checkpoint"] if "cf_model" in config else None
    if not path:
        return
    saved = load_checkpoint(path, map_location="cpu")["config"]
    settings = {key: saved[key] for key in (config["cf_config"] or {}) if key in saved}
    config.final_config_dict["cf_config"] = settings
    getLogger().info(
        set_color(f"{saved['model']} teacher from cf_checkpoint", "green")
        + f" {path}; its settings (cf_config is not used): {settings}"
    )
