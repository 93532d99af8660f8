"""The item-index keys of generative recommenders (``item_index.build_item_index``): which scheme
gives each item its code, and LC-Rec's RQ-VAE settings. Defaults are LC-Rec's (``index/run.sh``:
four levels of 256 codes, code size 32, 10,000 epochs; ``data_process/amazon_text_emb.py``: the
LLaMA-7B encoder); ``check_index_settings`` checks the entries of the list keys and how keys agree.
"""

import math

from recbole_llmsrec.settings import (
    DTYPES,
    Setting,
    SettingError,
    integer,
    number,
    problem_of,
    text,
)

#: the schemes of ``item_index`` (``item_index.SCHEMES`` repeats them)
INDEX_SCHEMES = ("rqvae", "sequential", "collaborative", "random")

INDEX_SETTINGS = [
    Setting(
        "item_index",
        "str",
        "rqvae",
        "how items get their codes: LC-Rec's RQ-VAE, or P5's sequential, collaborative, random",
        choices=INDEX_SCHEMES,
    ),
    integer(
        "item_index_codebook_size",
        256,
        "digits per level of sequential/random, clusters per node of collaborative",
        low=2,
    ),
    text("rqvae_encoder_path", "huggyllama/llama-7b", "frozen encoder of the item texts"),
    Setting("rqvae_encoder_dtype", "str", "bfloat16", "its weights' dtype", choices=DTYPES),
    integer("rqvae_encoder_max_length", 512, "tokens per field text"),
    Setting("rqvae_codebook_sizes", "list", [256, 256, 256, 256], "codes per level"),
    integer("rqvae_code_size", 32, "width of the quantised latent"),
    Setting(
        "rqvae_hidden_sizes",
        "list",
        [2048, 1024, 512, 256, 128, 64],
        "encoder MLP widths (the decoder mirrors them)",
    ),
    Setting(
        "rqvae_sinkhorn_epsilons",
        "list",
        [0.0, 0.0, 0.0, 0.003],
        "Sinkhorn epsilon per level (0: argmin)",
    ),
    integer("rqvae_sinkhorn_iterations", 50, "Sinkhorn-Knopp iterations"),
    integer(
        "rqvae_collision_rounds",
        20,
        "Sinkhorn rounds over colliding items before the guaranteed repair",
        low=0,
    ),
    number("rqvae_beta", 0.25, "commitment loss weight"),
    number("rqvae_quant_loss_weight", 1.0, "quantisation loss weight"),
    number("rqvae_dropout", 0.0, "dropout before each MLP layer", high=1.0),
    integer("rqvae_kmeans_iterations", 100, "k-means iterations initialising each codebook"),
    integer("rqvae_epochs", 10000, "RQ-VAE training epochs"),
    integer("rqvae_batch_size", 1024, "item embeddings per RQ-VAE step"),
    number("rqvae_learning_rate", 0.001, "AdamW learning rate", open_low=True),
    number("rqvae_weight_decay", 0.0001, "AdamW weight decay"),
    integer("rqvae_warmup_epochs", 50, "epochs of linear warm-up", low=0),
]


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_non_negative_number(value):
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and math.isfinite(value) and value >= 0


def _refuse(key, value, rule):
    raise SettingError(f"{key}={value!r} is not allowed: it must be {rule}.")


def _check_each_key(config):
    """Every key's own rule (``settings.problem_of``), for configs that ``check_settings`` never saw
    (a model that does not declare these keys passes a plain mapping)."""
    for setting in INDEX_SETTINGS:
        value = config[setting.name]
        problem = None if value is None else problem_of(setting, value)
        if problem:
            _refuse(setting.name, value, f"{problem} ({setting.meaning})")


def check_index_settings(config):
    """Refuse, naming the key, the value and what is allowed: a key outside its own rule, a list
    entry that is not a positive integer (codebook and hidden sizes) or a non-negative number
    (Sinkhorn epsilons), an empty codebook list, and epsilons not one per level."""
    _check_each_key(config)
    sizes, hidden = config["rqvae_codebook_sizes"], config["rqvae_hidden_sizes"]
    epsilons = config["rqvae_sinkhorn_epsilons"]
    if sizes is not None and not (sizes and all(map(_is_positive_int, sizes))):
        _refuse("rqvae_codebook_sizes", sizes, "a non-empty list of positive integers")
    if hidden is not None and not all(map(_is_positive_int, hidden)):
        _refuse("rqvae_hidden_sizes", hidden, "a list of positive integers")
    if epsilons is not None and not all(map(_is_non_negative_number, epsilons)):
        _refuse("rqvae_sinkhorn_epsilons", epsilons, "a list of numbers >= 0")
    if sizes is not None and epsilons is not None and len(epsilons) != len(sizes):
        _refuse(
            "rqvae_sinkhorn_epsilons",
            epsilons,
            f"one number per level of rqvae_codebook_sizes={sizes!r} ({len(sizes)} levels)",
        )
