"""Two training steps of each model, in one process or in each of several (run under torchrun).

``python distributed_steps.py OUT LLM_PATH OPT_PATH`` (one process) writes the reference parameters;
``torchrun --nproc_per_node=2 distributed_steps.py OUT ...`` writes DDP's (and FSDP's for HLLM and
LCRec).
Rank r trains on micro-batch r of a fixed pair; the reference trains on the same pair: for SASRec,
whose loss is a mean over rows, as one concatenated batch; for the plugin models, whose losses hold
batch-level terms (uniformity, InfoNCE and token means, shared negatives), as two accumulated
micro-batches, which is what data parallelism computes. Each micro-batch's random draws (negatives,
LCRec's prompt templates) are seeded from its first user, so both sides draw the same ones. Dropout
is 0 so that the forward is deterministic, and the optimizer is SGD, whose step is lr x gradient:
Adam's first step is lr x sign(gradient), which turns float rounding in a gradient component that is
zero up to 1e-10 into a difference of lr.
"""

import os
import sys

import torch

from recbole_llmsrec import Config, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.distribution.wrapping import full_training_state
from recbole_llmsrec.evaluation.loaders import data_preparation
from recbole_llmsrec.registry import get_model

MICRO_BATCH = 4
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
# sgd: no betas
TEACHER = {
    "hidden_size": 16,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "adam_betas": None,
    **NO_DROPOUT,
}


def hllm_configs(common, llm_path):
    """HLLM with its Item LLM frozen, and HLLM training both LLMs."""
    hllm = {
        **common,
        "item_llm_path": llm_path,
        "user_llm_path": llm_path,
        "max_text_length": 16,
        "num_negatives": 8,
        "MAX_ITEM_LIST_LENGTH": 5,
        "item_llm_dtype": "float32",
        "user_llm_dtype": "float32",
        "item_llm_gradient_checkpointing": False,
        "user_llm_gradient_checkpointing": False,
    }
    return {
        "HLLM-frozen": {**hllm, "freeze_item_llm": True},
        # random tiny LLMs: every cosine is near 1, none may be masked
        "HLLM": {**hllm, "item_encode_tokens": 64, "nce_threshold": 1.1},
    }


def configs(llm_path, opt_path, minilm_path, out):
    common = {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "state": "error",
        "checkpoint_dir": os.path.join(out, "saved"),
        "user_inter_num_interval": "[0,30]",
        "learning_rate": 0.5,
        "learner": "sgd",
        "adam_betas": None,
        "train_neg_sample_args": None,
    }
    llm = {
        "llm_path": llm_path,
        "llm_dtype": "float32",
        "llm_gradient_checkpointing": False,
        "cf_config": TEACHER,
        "MAX_ITEM_LIST_LENGTH": 10,
    }
    return {
        "SASRec": {**common, **TEACHER, "MAX_ITEM_LIST_LENGTH": 10, "loss_type": "CE"},
        "LLMSRec": {
            **common,
            **llm,
            "projection_hidden_size": 16,
            "representation_size": 8,
            "train_negatives": 4,
        },
        "ALLMRec": {**common, **llm, "llm_path": opt_path, "text_encoder_path": minilm_path},
        **hllm_configs(common, llm_path),
        "LCRec": {
            **common,
            **llm,
            "MAX_ITEM_LIST_LENGTH": 5,
            "prompt_history_length": 5,
            "item_index": "sequential",
            "item_index_codebook_size": 16,
            "item_description_fields": ["class"],
            "clip_grad_norm": None,
            "gradient_accumulation_steps": 1,  # its YAML's 2 would make each rank's step two
        },
    }


def seeded_loss(model, interaction):
    """The loss of ``interaction`` with the model's random draws (HLLM's negatives, LCRec's
    templates) seeded from its first user: both sides draw the same ones."""
    for generator in ("negative_generator", "template_generator"):
        if hasattr(model, generator):
            getattr(model, generator).manual_seed(int(interaction[model.USER_ID][0]))
    return model.calculate_loss(interaction)


def train_two_steps(model_name, config_dict, world, rank):
    if world == 1:  # a fresh embedding cache for the reference run
        config_dict = {**config_dict, "checkpoint_dir": config_dict["checkpoint_dir"] + "-single"}
    config = Config(model=model_name, dataset="ml-100k", config_dict=config_dict)
    torch.manual_seed(config["seed"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model(model_name)(config, train_data._dataset)
    if model_name == "HLLM" and not config["freeze_item_llm"]:
        model.max_logit_scale = (
            1.0  # below the initial 2.66: every step ends clamping the temperature
        )
    if model_name == "ALLMRec":  # stage 2 with the (random) stage-1 encoder frozen
        model.stage_done.fill_(True)
        model._freeze_finished_stages()
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    before = {name: p.detach().clone() for name, p in model.named_parameters() if name in trained}
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)  # FSDP shards the model
    rows = list(range(2 * MICRO_BATCH))
    pair = [train_data.collate_fn(rows[:MICRO_BATCH]), train_data.collate_fn(rows[MICRO_BATCH:])]
    if world > 1:
        batches = [pair[rank]]
    elif model_name == "SASRec":
        batches = [train_data.collate_fn(rows)]
    else:
        batches = pair
        config["gradient_accumulation_steps"] = 2

    # two steps: DDP finds a trainable parameter that got no gradient only when the next step starts
    trainer._train_epoch(batches * 2, 0, loss_func=lambda batch: seeded_loss(model, batch))
    state, _ = full_training_state(trainer.model, trainer.optimizer)
    result = {"before": before, "after": {name: state[name] for name in trained if name in state}}
    ddp = getattr(trainer, "ddp_model", None)
    if ddp is not None:  # the parameters DDP broadcasts and synchronises
        result["synchronised"] = sorted(
            n.removeprefix("model.")
            for n, _ in ddp.module.named_parameters()
            if n not in ddp.parameters_to_ignore
        )
    if world > 1 and hasattr(model, "items_encoded"):  # Item LLM forwards of each rank
        result["items_encoded"] = [None] * world
        torch.distributed.all_gather_object(result["items_encoded"], model.items_encoded)
    return result


def main(out, llm_path, opt_path, minilm_path):
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    results = {}
    for name, config_dict in configs(llm_path, opt_path, minilm_path, out).items():
        results[name] = train_two_steps(name.split("-")[0], config_dict, world, rank)
        if world > 1 and name in ("HLLM", "LCRec"):
            results[f"{name}-fsdp"] = train_two_steps(
                name, {**config_dict, "distributed_strategy": "fsdp"}, world, rank
            )
    if rank == 0:
        torch.save(results, os.path.join(out, f"steps-{world}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
