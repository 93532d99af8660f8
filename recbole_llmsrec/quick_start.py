"""``run_recbole`` and the command line, without ``recbole.quick_start`` (which imports ray 2.6.3).

RecBole 1.2.1's ``run_recbole`` steps in its order, with the plugin's split (``evaluation``) and
trainers; the thop FLOPs count is skipped for plugin models (it cannot count an LLM). Several
processes: ``torchrun`` or RecBole's ``--nproc`` (spawned as RecBole's ``run`` does); the model is
built from ``seed`` on every rank, which then reseeds ``seed + rank`` (RecBole seeded ``seed +
local_rank`` before building).
"""

import argparse
import logging
import os
import shlex
import sys
from logging import getLogger

import torch.distributed
from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_llmsrec.checkpoints import (
    check_checkpoint_data,
    check_checkpoint_file,
    data_ids,
    load_checkpoint,
)
from recbole_llmsrec.config import Config
from recbole_llmsrec.distribution.process_group import is_distributed, rank
from recbole_llmsrec.evaluation.protocol import protocol_line, protocol_name
from recbole_llmsrec.fingerprint import build_data, fingerprint_line
from recbole_llmsrec.hooks import model_hook
from recbole_llmsrec.llm.embedding_cache import CACHE_SUBDIR
from recbole_llmsrec.models.cf_teacher.stage0 import data_differences, show_loaded_teacher_settings
from recbole_llmsrec.registry import get_model, is_plugin_model, plugin_model_names
from recbole_llmsrec.safe_write import remove_orphaned_partials
from recbole_llmsrec.training.trainer import get_trainer


def run_recbole(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved=True,
    checkpoint=None,
    evaluate=None,
    command_line=None,
):
    """RecBole's ``run_recbole`` (result plus ``saved_model_file`` and ``data_fingerprint``), plugin
    models first; ``checkpoint``: resume from it; ``evaluate``: test a checkpoint of this model and
    data, untrained; ``command_line``: what the user typed, for the log (default: this Python
    call)."""
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )
    init_seed(config["seed"], config["reproducibility"])
    logger = start_log(
        config, config_file_list, command_line or python_call(model, dataset, config_dict)
    )
    data = build_data(config)
    logger.info(set_color(fingerprint_line(data[-1]), "green"))
    show_loaded_teacher_settings(config)
    logger.info(config)
    logger.info(data[0])
    trainer = build_trainer(config, data)
    if evaluate:
        return evaluate_only(trainer, data, evaluate)
    if checkpoint:
        check_checkpoint_file(checkpoint, trainer.data_ids, "--checkpoint")
        trainer.resume_checkpoint(checkpoint)
    return train_and_test(trainer, data, saved)


def build_trainer(config, data):
    """The model (seeded as RecBole seeds it) and its trainer, carrying the ids of the data."""
    dataset, train_data, _, _, fingerprint = data
    init_seed(config["seed"], config["reproducibility"])  # = RecBole's seed + local_rank
    model_class = get_model(config["model"])
    model = model_class(config, train_data._dataset).to(config["device"])
    if is_distributed(config):
        init_seed(config["seed"] + rank(), config["reproducibility"])
    getLogger().info(model)
    if not is_plugin_model(model_class):
        flops = get_flops(
            model, dataset, config["device"], getLogger(), construct_transform(config)
        )
        getLogger().info(set_color("FLOPs", "blue") + f": {flops}")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.data_ids = data_ids(train_data._dataset, fingerprint)
    return trainer


def evaluate_only(trainer, data, path):
    """``--evaluate``: the test result of the checkpoint at ``path``, untrained."""
    _, train_data, _, test_data, fingerprint = data
    test_result = evaluate_checkpoint(trainer, train_data, test_data, path)
    log_prompts_shortened(trainer.model)
    return {
        "test_result": test_result,
        "data_fingerprint": fingerprint,
        "test_per_user": trainer.per_user_values(test_data),
    }


def train_and_test(trainer, data, saved):
    """RecBole's fit, then the test of the best model (``saved``) or the last."""
    config, (_, train_data, valid_data, test_data, fingerprint) = trainer.config, data
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    log_prompts_shortened(trainer.model)
    logger, note = getLogger(), result_note(config, fingerprint)
    environment = get_environment(config).draw()
    logger.info(f"The running environment of this training is as follows:\n{environment}")
    logger.info(set_color("best valid ", "yellow") + f"{note}: {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f"{note}: {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file,
        "data_fingerprint": fingerprint,
        "test_per_user": trainer.per_user_values(test_data),
    }


def log_prompts_shortened(model):
    shortened = model_hook(model, "prompts_shortened")
    if shortened:
        getLogger().info(
            f"{shortened} prompts were longer than the LLM's context and were "
            'cut, oldest history items first (README "Security and data safety")'
        )


def python_call(model, dataset, config_dict):
    return f"run_recbole(model={model!r}, dataset={dataset!r}, config_dict={config_dict!r})"


def start_log(config, config_file_list, command_line):
    """RecBole's logger (rank 0; the other ranks print errors only), then the run's header: the
    command as typed, the config files in order, the protocol, and (on the console) where the log
    file is."""
    if rank() == 0:
        init_logger(config)
    else:  # no log file of its own: rank 0's is the run's log
        logging.basicConfig(level=logging.ERROR, handlers=[logging.StreamHandler()], force=True)
    logger = getLogger()
    logger.info(f"command: {command_line}")
    logger.info(f"config files (later ones win): {' '.join(config_file_list or []) or '(none)'}")
    logger.info(f"protocol: {protocol_line(config)}")
    for level, note in getattr(config, "file_notes", []):
        getattr(logger, level)(note)
    if rank() == 0:
        for folder in (
            config["checkpoint_dir"],
            os.path.join(config["checkpoint_dir"], CACHE_SUBDIR),
        ):
            removed = remove_orphaned_partials(folder)
            if removed:
                logger.info(f"removed {removed} partial file(s) of killed saves from {folder}")
    for handler in logger.handlers:  # RecBole's file handler writes under ./log/
        if (
            isinstance(handler, logging.FileHandler)
            and f"{os.sep}log{os.sep}" in handler.baseFilename
        ):
            logger.info(f"log file: {os.path.abspath(handler.baseFilename)}")
    return logger


def result_note(config, fingerprint):
    """What a result line was computed on: the protocol and the data fingerprint."""
    return f" (protocol {protocol_name(config)}; data {fingerprint['data']})"


def evaluate_checkpoint(trainer, train_data, test_data, path):
    """RecBole's test of the model saved at ``path`` (refused if it is another model or other
    data)."""
    config = trainer.config
    checkpoint = load_checkpoint(path, map_location="cpu")
    saved = checkpoint["config"]
    differences = data_differences(config, saved)
    if saved["model"] != config["model"] or differences:
        raise ValueError(
            f"--evaluate={path} holds a {saved['model']} trained with other settings than "
            f"this {config['model']} run: {differences or 'another model'}. Pass the same "
            "--model, --dataset and config files as its training run."
        )
    check_checkpoint_data(checkpoint.get("data"), trainer.data_ids, path, "--evaluate")
    # as fit does: coverage/popularity metrics need it
    trainer.eval_collector.data_collect(train_data)
    try:
        test_result = trainer.evaluate(
            test_data, load_best_model=True, model_file=path, show_progress=config["show_progress"]
        )
    except RuntimeError as error:  # RecBole's load_state_dict: weights of other sizes
        if "size mismatch" not in str(error):
            raise
        raise ValueError(
            f"--evaluate={path}: its weights do not fit this {config['model']} "
            f"({str(error).splitlines()[1].strip()}). Pass the model settings of its "
            "training run (a teacher saved by LLMSRec/ALLMRec has their cf_config's sizes)."
        ) from error
    fingerprint = trainer.data_ids["fingerprint"]
    getLogger().info(
        set_color("test result", "yellow") + f"{result_note(config, fingerprint)}: {test_result}"
    )
    return test_result


def build_parser():
    parser = argparse.ArgumentParser(
        description=f"Run a RecBole or recbole-llmsrec model ({', '.join(plugin_model_names())}, "
        "or any RecBole model). Any other --key=value overrides that config key, as in RecBole."
    )
    parser.add_argument("--model", "-m", default="SASRec", help="model name (default: SASRec)")
    parser.add_argument(
        "--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)"
    )
    parser.add_argument(
        "--config_files", default=None, help="space-separated YAML files, later ones win"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="resume training from this checkpoint (a .pth under checkpoint_dir)",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on a user mistake (a bad setting, model, file or checkpoint), show the "
        "full traceback instead of one line (the log file keeps it once it exists)",
    )
    parser.add_argument(
        "--evaluate",
        default=None,
        metavar="CHECKPOINT",
        help="evaluate this saved model on the test split, without training",
    )
    for flag, default, meaning in (  # RecBole's multi-process launch (or use torchrun)
        ("--nproc", 1, "processes on this machine"),
        ("--world_size", -1, "processes on all machines"),
        ("--ip", "localhost", "address of rank 0's machine"),
        ("--port", "5678", "free port there"),
        ("--group_offset", 0, "rank of this machine's first process"),
    ):
        parser.add_argument(flag, type=type(default), default=default, help=meaning)
    return parser


def parse_with_overrides(parser, argv):
    """``parser``'s flags; every other argument must be a --key=value config override, left in
    ``sys.argv`` alone, where RecBole's ``Config`` reads them."""
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    malformed = [arg for arg in overrides if not (arg.startswith("--") and "=" in arg)]
    if malformed:
        parser.error(f"unrecognised arguments {malformed}: overrides are written --key=value")
    sys.argv = [sys.argv[0]] + overrides
    return args, args.config_files.strip().split(" ") if args.config_files else None


def typed_command(argv):
    """The command line as the user typed it (before ``parse_with_overrides`` rewrites
    ``sys.argv``)."""
    return shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])


USER_MISTAKES = (ValueError, FileNotFoundError)  # the plugin's messages for what the user can fix


def report_user_mistakes(work, show_traceback=False):
    """``work()``; a user mistake (``USER_MISTAKES``) ends with one line on stderr, its traceback in
    the log file (when one is open) and exit status 2, unless ``show_traceback``
    (``--traceback``)."""
    try:
        return work()
    except USER_MISTAKES as error:
        if show_traceback:
            raise
        record = logging.LogRecord(
            "recbole_llmsrec",
            logging.ERROR,
            __file__,
            0,
            "run stopped: %s",
            (error,),
            sys.exc_info(),
        )
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv=None):
    command_line = typed_command(argv)
    args, config_file_list = parse_with_overrides(build_parser(), argv)
    return report_user_mistakes(
        lambda: launch(args, config_file_list, command_line), args.traceback
    )


def launch(args, config_file_list, command_line):
    """One process (or one of torchrun's), or RecBole's ``--nproc`` spawn of several."""
    kwargs = dict(
        model=args.model,
        dataset=args.dataset,
        config_file_list=config_file_list,
        checkpoint=args.checkpoint,
        evaluate=args.evaluate,
        command_line=command_line,
    )
    if args.nproc == 1 and args.world_size <= 0:
        return spawned_run(None, kwargs)  # one process, or one of torchrun's
    import torch.multiprocessing

    world_size = args.nproc if args.world_size == -1 else args.world_size
    kwargs["config_dict"] = {
        "world_size": world_size,
        "ip": args.ip,
        "port": args.port,
        "nproc": args.nproc,
        "offset": args.group_offset,
    }
    torch.multiprocessing.spawn(spawned_run, args=(kwargs,), nprocs=args.nproc, join=True)


def spawned_run(local_rank, kwargs):
    """One run; ``local_rank``: the index ``torch.multiprocessing.spawn`` gives an ``--nproc``
    process."""
    if local_rank is not None:
        kwargs["config_dict"] = {**kwargs["config_dict"], "local_rank": local_rank}
    try:
        run_recbole(**kwargs)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
