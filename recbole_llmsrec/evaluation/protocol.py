"""The evaluation protocol in words: one line for the log header and a few words for result
lines."""

from recbole_llmsrec.evaluation.sampler import PHASES


def _candidates_text(config, phase):
    mode = config["eval_args"]["mode"][phase]
    if mode == "full":
        masked = (
            "the user's earlier items masked" if config["eval_mask_history"] else "nothing masked"
        )
        return f"{phase} full (every item ranked, {masked})"
    args = config[f"{phase}_neg_sample_args"]
    kind = "popularity-weighted" if args["distribution"] == "popularity" else "uniform"
    outside = (
        "outside the user's history"
        if config["eval_neg_exclude_history"]
        else "other than the target"
    )
    negatives = f"{args['sample_num']} {kind} negatives {outside}"
    return f"{phase} {mode} (target + {negatives}, seeded per user)"


def protocol_line(config):
    """The evaluation protocol in one line (log header and result lines)."""
    args = config["eval_args"]
    split = ", ".join(f"{k} {v}" for k, v in args["split"].items())
    metrics = ", ".join(config["metrics"]) + f" @{','.join(map(str, config['topk']))}"
    phases = "; ".join(_candidates_text(config, phase) for phase in PHASES)
    shuffled = "; history shuffled at evaluation" if config["eval_shuffle_history"] else ""
    return (
        f"split {split}, order {args['order']}; {phases}; {metrics}; "
        f"model selection on valid {config['valid_metric']}{shuffled}"
    )


def protocol_name(config):
    """The protocol in a few words, for result lines: each phase's mode and what it leaves out."""
    names = []
    for phase in PHASES:
        mode = config["eval_args"]["mode"][phase]
        if mode == "full":
            names.append("full, history masked" if config["eval_mask_history"] else "full")
        else:
            names.append(
                f"{mode}, negatives outside the history"
                if config["eval_neg_exclude_history"]
                else mode
            )
    name = names[0] if names[0] == names[1] else f"valid {names[0]} / test {names[1]}"
    return name + (", history shuffled" if config["eval_shuffle_history"] else "")
