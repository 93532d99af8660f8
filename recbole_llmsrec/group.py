"""RecBole's ``run_recbole_group.py`` for this plugin, made reviewable (README "Comparing many
models in one table", "Significance"): the model list is checked before anything trains; every
model's data is built first and must share the first model's fingerprint (else the run stops, naming
the first difference); each model runs once per seed; the tables give mean ± standard deviation over
the seeds and, against a baseline, a paired t-test over test users of each per-user metric.
"""

import argparse
import os
import sys

from recbole.utils import ModelType

from recbole_llmsrec.config import Config
from recbole_llmsrec.evaluation.histories import training_matrix
from recbole_llmsrec.evaluation.sampler import PHASES
from recbole_llmsrec.fingerprint import (
    build_data,
    iter_evaluation_candidates,
    iter_evaluation_rows,
    iter_training_items,
)
from recbole_llmsrec.group_report import (
    SIGNIFICANCE_TEST,
    paired_p_values,
    plot_results,
    result_table,
    summarise,
)
from recbole_llmsrec.quick_start import (
    parse_with_overrides,
    report_user_mistakes,
    run_recbole,
    typed_command,
)
from recbole_llmsrec.registry import get_model, plugin_model_names


def model_of(entry):
    """The model of a ``--model_list`` entry: ``NAME`` or ``NAME@LABEL``, a labelled run of NAME
    with its own ``--model_config`` files (P5's indexing schemes: ``LCRec@sequential``)."""
    return entry.partition("@")[0]


def parse_model_list(text):
    """Model names from ``--model_list`` (comma-separated, spaces around names ignored), each
    ``NAME`` or ``NAME@LABEL``: each must be known and given once; checked before anything
    trains."""
    names = [name.strip() for name in str(text).split(",")]
    if any(not name or name.endswith("@") for name in names):
        raise ValueError(
            f"--model_list={text!r} has an empty name or label: give NAME or NAME@LABEL entries "
            "separated by commas."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"--model_list={text!r} names {', '.join(repeated)} more than once: a model "
            "runs once per seed (use --seeds to repeat it)."
        )
    for name in names:
        get_model(model_of(name))  # an unknown name is a ValueError naming the closest ones
    return names


def parse_seeds(text):
    """``--seeds=S1,S2,...`` as distinct integers (``None``: the config's seed, once)."""
    if text is None:
        return [None]
    try:
        seeds = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(
            f"--seeds={text!r}: give integers separated by commas, e.g. 2020,2021."
        ) from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds={text!r} repeats a seed.")
    return seeds


def parse_model_config(text, models):
    """``--model_config=NAME:FILE[ FILE...],NAME:FILE`` as ``{model: [files]}``: each model's own
    schedule and model files, given after the shared ones."""
    result = {}
    for part in filter(None, (p.strip() for p in str(text or "").split(","))):
        name, _, files = part.partition(":")
        name, files = name.strip(), files.split()
        if name not in models or not files:
            raise ValueError(
                f"--model_config entry {part!r}: write MODEL:FILE with a model of "
                f"--model_list ({', '.join(models)})."
            )
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"--model_config entry {part!r}: no such file {missing[0]}.")
        result[name] = files
    return result


def _rows(train, valid, test, fingerprint_history):
    items = train._dataset.field2id_token[train._dataset.iid_field][1:]
    parts = {
        "catalogue": [[item] for item in sorted(items.tolist())],
        "train": list(iter_training_items(train._dataset, fingerprint_history)),
    }
    for phase, loader in zip(PHASES, (valid, test)):
        parts[f"{phase} rows"] = list(iter_evaluation_rows(loader))
        parts[f"{phase} candidates"] = list(iter_evaluation_candidates(loader) or [])
    return parts


def first_difference(reference, other):
    """A sentence naming the first place where two ``_rows`` results differ."""
    for key in reference:
        a, b = reference[key], other[key]
        for index, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"{key}, row {index}: {x[:12]} vs {y[:12]}"
        if len(a) != len(b):
            return f"{key}: {len(a)} rows vs {len(b)}"
    return "the evaluation settings (mode, masking, negatives or shuffling)"


def model_data(model, dataset, files, config_dict):
    """``(fingerprint, rows)`` of ``model``'s data under the given files and settings, nothing
    trained."""
    config = Config(model=model, dataset=dataset, config_file_list=files, config_dict=config_dict)
    _, train, valid, test, fingerprint = build_data(config)
    history = training_matrix(train._dataset, config["MODEL_TYPE"] == ModelType.SEQUENTIAL)
    return fingerprint, _rows(train, valid, test, history)


def check_same_data(models, dataset, files_of, config_dict):
    """Build every model's data (first seed) before training; refuse the group when a model's
    fingerprint differs from the first model's, naming the first difference."""
    reference = None
    for model in models:
        fingerprint, rows = model_data(model_of(model), dataset, files_of[model], config_dict)
        if reference is None:
            reference = (model, fingerprint, rows)
            continue
        if fingerprint["data"] != reference[1]["data"]:
            raise ValueError(
                f"{model} would be evaluated on other data than {reference[0]} (data fingerprint "
                f"{fingerprint['data']} vs {reference[1]['data']}): first difference in "
                f"{first_difference(reference[2], rows)}. A comparison needs the same data "
                "settings "
                "for every model: keep data keys (load_col, filters, split, MAX_ITEM_LIST_LENGTH, "
                "protocol) in the shared --config_files, not in --model_config."
            )
    return reference[1]


def run_recbole_group(
    model_list,
    dataset,
    config_file_list=None,
    config_dict=None,
    valid_latex="./latex/valid.tex",
    test_latex="./latex/test.tex",
    seeds=None,
    baseline=None,
    model_config=None,
    plot=None,
    command_line=None,
):
    """Every model of ``model_list`` on the same data (checked by fingerprint before training), once
    per seed; LaTeX tables of the best validation and the test results (mean ± std, test p-values
    against ``baseline``, default the first model) written to ``valid_latex``/``test_latex``, a
    picture to ``plot``; returns ``(markdown test table, {model: [run results]})``."""
    models = parse_model_list(",".join(model_list) if isinstance(model_list, list) else model_list)
    baseline = baseline or models[0]
    if baseline not in models:
        raise ValueError(f"--baseline={baseline!r} is not in --model_list ({', '.join(models)}).")
    if plot:
        import matplotlib  # noqa: F401  (fail now, not after training: pip install recbole-llmsrec[plot])
    seeds, own = seeds or [None], model_config or {}
    files_of = {m: [*(config_file_list or []), *own.get(m, [])] for m in models}

    def settings(seed):
        return {**(config_dict or {}), **({} if seed is None else {"seed": seed})}

    fingerprint = check_same_data(models, dataset, files_of, settings(seeds[0]))

    def run(model, seed):
        note = f" (group run: {model}, seed {seed})" if command_line else None
        command = note and command_line + note
        return run_recbole(
            model_of(model), dataset, files_of[model] or None, settings(seed), command_line=command
        )

    runs = {m: [run(m, s) for s in seeds] for m in models}
    check_runs_saw_the_same_data(runs, seeds, fingerprint)
    return report(runs, baseline, len(seeds), (valid_latex, test_latex), plot), runs


def report(runs, baseline, seed_count, latex_paths, plot):
    """The tables of ``runs`` (``{model: [result per seed]}``): LaTeX files of the best validation
    and the test results at ``latex_paths``, the picture at ``plot``; returns the Markdown test
    table."""
    models = list(runs)
    p_values = {m: paired_p_values(runs[baseline], runs[m]) for m in models if m != baseline}
    bigger = runs[models[0]][0]["valid_score_bigger"]
    test = {m: summarise(r, "test_result") for m, r in runs.items()}
    valid = {m: summarise(r, "best_valid_result") for m, r in runs.items()}
    spread = rf"mean $\pm$ std over {seed_count} seed(s)"
    test_caption = f"Test results ({spread}; $p$: {SIGNIFICANCE_TEST} against {baseline})"
    tables = (
        (latex_paths[0], valid, {}, f"Best validation results ({spread})"),
        (latex_paths[1], test, p_values, test_caption),
    )
    for path, summaries, p, caption in tables:
        write_text(path, result_table(summaries, p, latex=True, bigger=bigger, caption=caption))
    if plot:
        plot_results(plot, test)
    return result_table(test, p_values, bigger=bigger)


def check_runs_saw_the_same_data(runs, seeds, fingerprint):
    """Each seed's runs evaluated on one data (the candidates are seeded, so seeds differ), the
    first seed's on the data checked before training (``fingerprint``)."""
    first_model = next(iter(runs))
    for model, results in runs.items():
        for seed, result, first in zip(seeds, results, runs[first_model]):
            if result["data_fingerprint"]["data"] != first["data_fingerprint"]["data"]:
                raise RuntimeError(
                    f"{model}'s run with seed {seed} was evaluated on other data than "
                    f"{first_model}'s: compare them only after fixing the data settings."
                )
    if runs[first_model][0]["data_fingerprint"]["data"] != fingerprint["data"]:
        raise RuntimeError("the runs were evaluated on other data than checked before training.")


def write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def group_main(argv=None):
    command_line = typed_command(argv)
    parser = argparse.ArgumentParser(
        description="RecBole's run_recbole_group.py with this plugin's "
        f"models ({', '.join(plugin_model_names())}): all on the same data."
    )
    parser.add_argument("--model_list", "-m", default="SASRec", help="comma-separated model names")
    parser.add_argument(
        "--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)"
    )
    parser.add_argument(
        "--config_files", default=None, help="space-separated YAML files, later ones win"
    )
    parser.add_argument(
        "--valid_latex", default="./latex/valid.tex", help="LaTeX table of validation"
    )
    parser.add_argument(
        "--test_latex", default="./latex/test.tex", help="LaTeX table of test results"
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds: each model runs once per seed"
    )
    parser.add_argument(
        "--baseline", default=None, help="model the p-values compare with (default: first)"
    )
    parser.add_argument(
        "--model_config",
        default=None,
        help="a model's own files after the shared ones: NAME:FILE[ FILE],NAME:FILE",
    )
    parser.add_argument(
        "--plot", default=None, metavar="PATH", help="also draw the table (PNG, PDF, ...)"
    )
    parser.add_argument("--traceback", action="store_true", help="full traceback on a user mistake")
    args, config_file_list = parse_with_overrides(parser, argv)
    report_user_mistakes(
        lambda: run_group_command(args, config_file_list, command_line), args.traceback
    )


def run_group_command(args, config_file_list, command_line):
    models = parse_model_list(args.model_list)
    table, runs = run_recbole_group(
        models,
        args.dataset,
        config_file_list,
        valid_latex=args.valid_latex,
        test_latex=args.test_latex,
        seeds=parse_seeds(args.seeds),
        baseline=args.baseline,
        model_config=parse_model_config(args.model_config, models),
        plot=args.plot,
        command_line=command_line,
    )
    fingerprints = ", ".join(run["data_fingerprint"]["data"] for run in runs[models[0]])
    seeds = len(next(iter(runs.values())))
    print(
        f"\nTest results ({args.dataset}; {command_line}):\nevery model on data {fingerprints} "
        f"(one per seed); mean ± std over {seeds} seed(s); p: {SIGNIFICANCE_TEST} against "
        f'{args.baseline or models[0]} (README "Significance"); LaTeX in {args.valid_latex}, '
        f"{args.test_latex}{f', picture in {args.plot}' if args.plot else ''}\n\n{table}",
        file=sys.stdout,
    )
