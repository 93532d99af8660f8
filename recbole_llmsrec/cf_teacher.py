"""Stage 0 of LLM-SRec and A-LLMRec: RecBole's own SASRec as the frozen collaborative-filtering model,
loaded from a RecBole checkpoint of the same data (``cf_checkpoint``) or pre-trained here through
RecBole's ``Trainer`` with ``cf_config`` over the run's config (data, split and ``MAX_ITEM_LIST_LENGTH``
must stay the run's). Always frozen and in eval mode: the originals left its dropout on.
"""

from logging import getLogger

from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import set_color

from recbole_llmsrec.compat import load_checkpoint
from recbole_llmsrec.config import derived_config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.distributed import as_single_process
from recbole_llmsrec.evaluation import data_preparation
from recbole_llmsrec.llm import freeze
from recbole_llmsrec.utils import get_trainer

# Dataset settings that must match between the teacher's run and this run (item ids must be the same).
MATCHING_DATASET_KEYS = ("dataset", "user_inter_num_interval", "item_inter_num_interval",
                         "val_interval", "rm_dup_inter", "filter_inter_by_user_or_item",
                         "MAX_ITEM_LIST_LENGTH")
SPLIT_KEYS = ("split", "order", "group_by")  # of eval_args: the teacher must never see valid/test data


def data_differences(config, other):
    """``{key: (other's value, config's value)}`` for the data and split settings that differ."""
    differences = {k: (other[k], config[k]) for k in MATCHING_DATASET_KEYS if other[k] != config[k]}
    differences.update({f"eval_args.{k}": (other["eval_args"].get(k), config["eval_args"].get(k))
                        for k in SPLIT_KEYS if other["eval_args"].get(k) != config["eval_args"].get(k)})
    return differences


def teacher_config(config):
    """The run's config for SASRec with ``cf_config`` applied over it (``config.derived_config``).

    A partial ``cf_config.eval_args`` (e.g. ``{mode: full}`` for a full-sort teacher validation)
    completes the run's; ``cf_config`` may change how the teacher trains and is validated, never its
    data, split or sequence length (refused here, before any training).
    """
    overrides = dict(config["cf_config"] or {})
    if isinstance(overrides.get("eval_args"), dict):
        overrides["eval_args"] = {**config["eval_args"], **overrides["eval_args"]}
    cf_config = derived_config(config, "SASRec", overrides)
    differences = data_differences(config, cf_config)
    if differences:
        detail = ", ".join(f"{k}: {a!r} vs the run's {b!r}" for k, (a, b) in differences.items())
        raise ValueError(f"cf_config changes the teacher's data ({detail}): the teacher trains on the "
                         "run's data and split. Remove these keys from cf_config.")
    if cf_config["loss_type"] != "CE":
        raise ValueError("cf_config.loss_type must be CE: the teacher reuses the run's training data, "
                         "which has no sampled negatives (train_neg_sample_args: ~).")
    return cf_config


def build_teacher(config, dataset):
    """A frozen SASRec with the teacher's architecture; loaded from ``cf_checkpoint`` when given.

    Returns ``(teacher, loaded)``.
    """
    path = config["cf_checkpoint"]
    if path:
        checkpoint = load_checkpoint(path, map_location="cpu")
        cf_config = _checked_teacher_config(config, dataset, checkpoint, path)
        teacher = SASRec(cf_config, dataset)
        teacher.load_state_dict(checkpoint["state_dict"])
        getLogger().info(set_color("SASRec teacher loaded from", "green") + f": {path}")
        return freeze(teacher), True
    return freeze(SASRec(teacher_config(config), dataset)), False


def check_same_data(config, dataset, saved_config, n_items, path, key="cf_checkpoint"):
    """Refuse a checkpoint (``key``) whose run used other data than this one, naming the difference."""
    mismatched = data_differences(config, saved_config)
    if mismatched:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"{key}={path} was trained on other data ({detail}). Use a checkpoint of the "
                         f"same dataset and settings, or set {key}: ~ to train one.")
    if n_items != dataset.item_num:
        raise ValueError(f"{key}={path} has {n_items} item embeddings but dataset {config['dataset']} "
                         f"has {dataset.item_num} items: it was trained on another version of the "
                         f"data. Set {key}: ~ to train one.")


def _checked_teacher_config(config, dataset, checkpoint, path):
    cf_config = checkpoint["config"]
    if cf_config["model"] != "SASRec":
        raise ValueError(f"cf_checkpoint={path} is a {cf_config['model']} checkpoint; "
                         f"{config['model']} needs a RecBole SASRec checkpoint.")
    check_same_data(config, dataset, cf_config,
                    checkpoint["state_dict"]["item_embedding.weight"].shape[0], path)
    cf_config.final_config_dict["device"] = config["device"]
    return cf_config


def pretrain_teacher(config, show_progress=False):
    """Pre-train SASRec through RecBole's Trainer on the run's data; returns the best checkpoint's path.

    The teacher gets RecBole's standard SequentialDataset (every prefix a training sample) for the same
    leave-one-out split, so it sees only training interactions; it is validated under the run's
    evaluation protocol (``cf_config`` may override it) by the trainer any SASRec run gets.
    """
    logger = getLogger()
    cf_config = as_single_process(teacher_config(config))  # in a distributed job: rank 0 alone
    logger.info(set_color("Pre-training the SASRec teacher", "green") + f": {config['cf_config']}")
    train_data, valid_data, test_data = data_preparation(cf_config, create_dataset(cf_config))
    teacher = SASRec(cf_config, train_data._dataset).to(cf_config["device"])
    trainer = get_trainer(cf_config["MODEL_TYPE"], "SASRec")(cf_config, teacher)
    trainer.fit(train_data, valid_data, saved=True, show_progress=show_progress)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=show_progress)
    logger.info(set_color("SASRec teacher test result", "yellow") + f": {test_result}")
    logger.info(f"Reuse this teacher with cf_checkpoint: {trainer.saved_model_file}")
    return trainer.saved_model_file
