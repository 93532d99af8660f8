"""The group run's report: paired significance tests over test users, mean ± std over seeds, the
Markdown and LaTeX tables and the optional picture (README "Significance")."""

import os

import numpy as np

SIGNIFICANCE_TEST = "paired t-test over test users, two-sided"


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
    """The group's table (Markdown or LaTeX): a row per model, ``mean ± std`` per metric, the
    p-value of the paired test against the baseline beside each non-baseline value; the best mean in
    bold."""
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
    return (
        rf"\begin{{table}}"
        "\n"
        r"\centering"
        "\n"
        rf"\caption{{{caption}}}"
        "\n"
        rf"\begin{{tabular}}{{l{'c' * len(metrics)}}}"
        "\n"
        r"\toprule"
        "\n"
        f"{header} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n"
    )


def plot_results(path, summaries):
    """Each metric per model as a bar with its spread over the seeds; with ``eval_item_groups`` a
    second row of panels gives each metric per item group (cold to warm). Needs matplotlib (the
    ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summaries)
    metrics = [k for k in summaries[models[0]] if " items[" not in k and not k.startswith("rows")]
    groups = sorted(
        {
            k.split(" ", 1)[1]
            for k in summaries[models[0]]
            if " items[" in k and not k.startswith("rows")
        },
        key=lambda g: float(g[6:].split(",")[0]),
    )
    rows = 2 if groups else 1
    figure, axes = plt.subplots(
        rows, len(metrics), figsize=(3.2 * len(metrics), 3.2 * rows), squeeze=False
    )
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
                ax.bar(
                    np.arange(len(groups)) + i * width,
                    [v[0] for v in values],
                    width,
                    yerr=[v[1] for v in values],
                    capsize=3,
                    label=model,
                    color=f"C{i}",
                )
            ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=45)
            ax.set_title(f"{metric} per item group")
    axes[-1][0].legend(fontsize="small") if groups else None
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
