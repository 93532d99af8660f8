"""RecBole's ``run_recbole_group.py`` for this plugin, made reviewable (README "Comparing many models in
one table", "Significance"): the model list is checked before anything trains; every model's data is
built first and must share the first model's fingerprint (else the run stops, naming the first
difference); each model runs once per seed; the tables give mean ± standard deviation over the seeds
and, against a baseline, a paired t-test over test users of each per-user metric.
"""

import argparse
import os
import sys

import numpy as np
from recbole.utils import ModelType

from recbole_llmsrec.config import Config
from recbole_llmsrec.evaluation.histories import training_matrix
from recbole_llmsrec.evaluation.sampler import PHASES
from recbole_llmsrec.fingerprint import (
    build_data,
    evaluation_candidates,
    evaluation_rows,
    training_items,
)
from recbole_llmsrec.quick_start import (
    parse_with_overrides,
    report_user_mistakes,
    run_recbole,
    typed_command,
)
from recbole_llmsrec.registry import get_model, plugin_model_names

SIGNIFICANCE_TEST = "paired t-test over test users, two-sided"


def parse_model_list(text):
    """Model names from ``--model_list`` (comma-separated, spaces around names ignored): each must be
    known and given once; checked before anything trains."""
    names = [name.strip() for name in str(text).split(",")]
    if any(not name for name in names):
        raise ValueError(f"--model_list={text!r} has an empty name: give names separated by commas.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--model_list={text!r} names {', '.join(repeated)} more than once: a model "
                         "runs once per seed (use --seeds to repeat it).")
    for name in names:
        get_model(name)  # an unknown name is a ValueError naming the closest ones
    return names


def parse_seeds(text):
    """``--seeds=S1,S2,...`` as distinct integers (``None``: the config's seed, once)."""
    if text is None:
        return [None]
    try:
        seeds = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--seeds={text!r}: give integers separated by commas, e.g. 2020,2021.") from None
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
            raise ValueError(f"--model_config entry {part!r}: write MODEL:FILE with a model of "
                             f"--model_list ({', '.join(models)}).")
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"--model_config entry {part!r}: no such file {missing[0]}.")
        result[name] = files
    return result


def _rows(train, valid, test, fingerprint_history):
    items = train._dataset.field2id_token[train._dataset.iid_field][1:]
    parts = {"catalogue": [[item] for item in sorted(items.tolist())],
             "train": training_items(train._dataset, fingerprint_history)}
    for phase, loader in zip(PHASES, (valid, test)):
        parts[f"{phase} rows"] = evaluation_rows(loader)
        parts[f"{phase} candidates"] = evaluation_candidates(loader) or []
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
    """``(fingerprint, rows)`` of ``model``'s data under the given files and settings, nothing trained."""
    config = Config(model=model, dataset=dataset, config_file_list=files, config_dict=config_dict)
    _, train, valid, test, fingerprint = build_data(config)
    history = training_matrix(train._dataset, config["MODEL_TYPE"] == ModelType.SEQUENTIAL)
    return fingerprint, _rows(train, valid, test, history)


def check_same_data(models, dataset, files_of, config_dict):
    """Build every model's data (first seed) before training; refuse the group when a model's
    fingerprint differs from the first model's, naming the first difference."""
    reference = None
    for model in models:
        fingerprint, rows = model_data(model, dataset, files_of[model], config_dict)
        if reference is None:
            reference = (model, fingerprint, rows)
            continue
        if fingerprint["data"] != reference[1]["data"]:
            raise ValueError(
                f"{model} would be evaluated on other data than {reference[0]} (data fingerprint "
                f"{fingerprint['data']} vs {reference[1]['data']}): first difference in "
                f"{first_difference(reference[2], rows)}. A comparison needs the same data settings "
                "for every model: keep data keys (load_col, filters, split, MAX_ITEM_LIST_LENGTH, "
                "protocol) in the shared --config_files, not in --model_config.")
    return reference[1]


def _aligned(per_user):
    order = np.argsort(np.asarray(per_user["users"], dtype=str), kind="stable")
    return np.asarray(per_user["users"], dtype=str)[order], order


def paired_p_values(baseline_runs, model_runs):
    """``{metric: p}``: two-sided paired t-test over test users of each user's metric value averaged
    over the seeds, the model against the baseline (rows paired by user token)."""
    from scipy.stats import ttest_rel

    def averaged(runs):
        users, values = None, {}
        for run in runs:
            run_users, order = _aligned(run["test_per_user"])
            if users is not None and not np.array_equal(users, run_users):
                raise ValueError("the seeds' test users differ: the rows cannot be paired.")
            users = run_users
            for key, column in run["test_per_user"].items():
                if key != "users":
                    values.setdefault(key, []).append(np.asarray(column)[order])
        return users, {key: np.mean(columns, axis=0) for key, columns in values.items()}

    base_users, base = averaged(baseline_runs)
    users, other = averaged(model_runs)
    if not np.array_equal(base_users, users):
        raise ValueError("the models' test users differ: a paired test does not apply.")
    p_values = {}
    for key in base.keys() & other.keys():
        if np.array_equal(base[key], other[key]):
            p_values[key] = 1.0  # identical per-user values: no evidence of a difference
        else:
            p_values[key] = float(ttest_rel(other[key], base[key]).pvalue)
    return p_values


def summarise(runs, phase_key):
    """``{metric: (mean, std)}`` over the seeds' results (std with ddof 1; 0 for one seed)."""
    keys = [key for key in runs[0][phase_key] if isinstance(runs[0][phase_key][key], float)]
    summary = {}
    for key in keys:
        values = np.array([run[phase_key][key] for run in runs], dtype=np.float64)
        summary[key] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return summary


def _cell(mean, std, p_value=None, latex=False):
    plus_minus = r" $\pm$ " if latex else " ± "
    text = f"{mean:.4f}{plus_minus}{std:.4f}"
    if p_value is not None:
        text += f" ($p$={p_value:.3g})" if latex else f" (p={p_value:.3g})"
    return text


def result_table(summaries, p_values, latex=False, bigger=True, caption=""):
    """The group's table (Markdown or LaTeX): a row per model, ``mean ± std`` per metric, the p-value
    of the paired test against the baseline beside each non-baseline value; the best mean in bold."""
    models = list(summaries)
    metrics = list(summaries[models[0]])
    best = {key: (max if bigger else min)(summaries[m][key][0] for m in models) for key in metrics}
    rows = []
    for model in models:
        cells = []
        for key in metrics:
            mean, std = summaries[model][key]
            cell = _cell(mean, std, p_values.get(model, {}).get(key), latex)
            bold = mean == best[key] and len(models) > 1
            cells.append((rf"\textbf{{{cell}}}" if latex else f"**{cell}**") if bold else cell)
        rows.append([model.replace("_", r"\_") if latex else model, *cells])
    if not latex:
        lines = [["Model", *metrics], ["---"] * (len(metrics) + 1), *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    header = " & ".join(["Model", *(m.replace("@", r"@").replace("_", r"\_") for m in metrics)])
    body = "\n".join(" & ".join(row) + r" \\" for row in rows)
    return (rf"\begin{{table}}" "\n" r"\centering" "\n" rf"\caption{{{caption}}}" "\n"
            rf"\begin{{tabular}}{{l{'c' * len(metrics)}}}" "\n" r"\toprule" "\n"
            f"{header} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n")


def plot_results(path, summaries):
    """Each metric per model as a bar with its spread over the seeds; with ``eval_item_groups`` a second
    row of panels gives each metric per item group (cold to warm). Needs matplotlib (the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summaries)
    metrics = [k for k in summaries[models[0]] if " items[" not in k and not k.startswith("rows")]
    groups = sorted({k.split(" ", 1)[1] for k in summaries[models[0]] if " items[" in k
                     and not k.startswith("rows")}, key=lambda g: float(g[6:].split(",")[0]))
    rows = 2 if groups else 1
    figure, axes = plt.subplots(rows, len(metrics), figsize=(3.2 * len(metrics), 3.2 * rows),
                                squeeze=False)
    for column, metric in enumerate(metrics):
        ax = axes[0][column]
        means, stds = zip(*(summaries[m][metric] for m in models))
        ax.bar(models, means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(models))])
        ax.set_title(metric)
        ax.tick_params(axis="x", labelrotation=45)
        if groups:
            ax = axes[1][column]
            width = 0.8 / len(models)
            for i, model in enumerate(models):
                values = [summaries[model].get(f"{metric} {g}", (np.nan, 0.0)) for g in groups]
                ax.bar(np.arange(len(groups)) + i * width, [v[0] for v in values], width,
                       yerr=[v[1] for v in values], capsize=3, label=model, color=f"C{i}")
            ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=45)
            ax.set_title(f"{metric} per item group")
    axes[-1][0].legend(fontsize="small") if groups else None
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def run_recbole_group(model_list, dataset, config_file_list=None, config_dict=None,
                      valid_latex="./latex/valid.tex", test_latex="./latex/test.tex", seeds=None,
                      baseline=None, model_config=None, plot=None, command_line=None):
    """Every model of ``model_list`` on the same data (checked by fingerprint before training), once per
    seed; LaTeX tables of the best validation and the test results (mean ± std, test p-values against
    ``baseline``, default the first model) written to ``valid_latex``/``test_latex``, a picture to
    ``plot``; returns ``(markdown test table, {model: [run results]})``."""
    models = parse_model_list(",".join(model_list) if isinstance(model_list, list) else model_list)
    baseline = baseline or models[0]
    if baseline not in models:
        raise ValueError(f"--baseline={baseline!r} is not in --model_list ({', '.join(models)}).")
    if plot:
        import matplotlib  # noqa: F401  (fail now, not after training: pip install recbole-llmsrec[plot])
    seeds = seeds or [None]
    own = model_config or {}
    files_of = {m: [*(config_file_list or []), *own.get(m, [])] for m in models}
    settings = lambda seed: {**(config_dict or {}), **({} if seed is None else {"seed": seed})}  # noqa: E731
    fingerprint = check_same_data(models, dataset, files_of, settings(seeds[0]))
    def run(model, seed):
        note = f" (group run: {model}, seed {seed})" if command_line else None
        return run_recbole(model, dataset, files_of[model] or None, settings(seed),
                           command_line=note and command_line + note)

    runs = {m: [run(m, s) for s in seeds] for m in models}
    for model, results in runs.items():  # per seed: the candidates are seeded, so seeds differ
        for seed, result, first in zip(seeds, results, runs[models[0]]):
            if result["data_fingerprint"]["data"] != first["data_fingerprint"]["data"]:
                raise RuntimeError(f"{model}'s run with seed {seed} was evaluated on other data than "
                                   f"{models[0]}'s: compare them only after fixing the data settings.")
    if runs[models[0]][0]["data_fingerprint"]["data"] != fingerprint["data"]:
        raise RuntimeError("the runs were evaluated on other data than checked before training.")
    p_values = {m: paired_p_values(runs[baseline], runs[m]) for m in models if m != baseline}
    bigger = runs[models[0]][0]["valid_score_bigger"]
    valid = {m: summarise(r, "best_valid_result") for m, r in runs.items()}
    test = {m: summarise(r, "test_result") for m, r in runs.items()}
    spread = rf"mean $\pm$ std over {len(seeds)} seed(s)"
    captions = {valid_latex: f"Best validation results ({spread})",
                test_latex: f"Test results ({spread}; $p$: {SIGNIFICANCE_TEST} against {baseline})"}
    for path, summaries, p in ((valid_latex, valid, {}), (test_latex, test, p_values)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            file.write(result_table(summaries, p, latex=True, bigger=bigger, caption=captions[path]))
    if plot:
        plot_results(plot, test)
    return result_table(test, p_values, bigger=bigger), runs


def group_main(argv=None):
    command_line = typed_command(argv)
    parser = argparse.ArgumentParser(description="RecBole's run_recbole_group.py with this plugin's "
                                     f"models ({', '.join(plugin_model_names())}): all on the same data.")
    parser.add_argument("--model_list", "-m", default="SASRec", help="comma-separated model names")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, later ones win")
    parser.add_argument("--valid_latex", default="./latex/valid.tex", help="LaTeX table of validation")
    parser.add_argument("--test_latex", default="./latex/test.tex", help="LaTeX table of test results")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: each model runs once per seed")
    parser.add_argument("--baseline", default=None, help="model the p-values compare with (default: first)")
    parser.add_argument("--model_config", default=None,
                        help="a model's own files after the shared ones: NAME:FILE[ FILE],NAME:FILE")
    parser.add_argument("--plot", default=None, metavar="PATH", help="also draw the table (PNG, PDF, ...)")
    parser.add_argument("--traceback", action="store_true", help="full traceback on a user mistake")
    args, config_file_list = parse_with_overrides(parser, argv)
    report_user_mistakes(lambda: run_group_command(args, config_file_list, command_line), args.traceback)


def run_group_command(args, config_file_list, command_line):
    models = parse_model_list(args.model_list)
    table, runs = run_recbole_group(
        models, args.dataset, config_file_list, valid_latex=args.valid_latex, test_latex=args.test_latex,
        seeds=parse_seeds(args.seeds), baseline=args.baseline,
        model_config=parse_model_config(args.model_config, models), plot=args.plot,
        command_line=command_line)
    fingerprints = ", ".join(run["data_fingerprint"]["data"] for run in runs[models[0]])
    seeds = len(next(iter(runs.values())))
    print(f"\nTest results ({args.dataset}; {command_line}):\nevery model on data {fingerprints} "
          f"(one per seed); mean ± std over {seeds} seed(s); p: {SIGNIFICANCE_TEST} against "
          f"{args.baseline or models[0]} (README \"Significance\"); LaTeX in {args.valid_latex}, "
          f"{args.test_latex}{f', picture in {args.plot}' if args.plot else ''}\n\n{table}", file=sys.stdout)
