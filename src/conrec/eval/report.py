"""The evaluation report: ``eval/report.md``, PNG plots, and a rich table for the terminal.

Inputs are plain dicts (``model -> metric -> value``, as in ``eval/metrics.json``), so the report
can be regenerated from a finished run without recomputing anything. Per-horizon values are flat
keys such as ``FHR@20|N=7d`` (see :func:`conrec.eval.metrics.horizon_key`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from conrec.console_text import visible  # noqa: E402
from conrec.errors import StageInputError  # noqa: E402
from conrec.eval.compare import ci_label, is_reference  # noqa: E402
from conrec.eval.metrics import parse_horizon_key  # noqa: E402
from conrec.io import atomic_path, read_json, write_text  # noqa: E402
from conrec.runs import RunDir  # noqa: E402

RANKING_METRICS = ("FHR", "HR", "NDCG")
TAIL_METRICS = ("FPrec", "LUF", "LIF")  # shown at the largest K
_LOWER_IS_BETTER = {"invalid_rate"}


# Characters of data that Markdown or HTML could read as markup mid-line: HTML tags and entities, emphasis, code spans,
# links and images (their "["), strikethrough, table cell borders and the backslash escape. The Markdown punctuation is
# written with a backslash (``user\\_42`` still reads as the id in the raw report.md, where ``user&#95;42`` did not),
# which every renderer (CommonMark, GitHub's, Python-Markdown's with its tables) shows as that character and never
# reads as markup; the HTML characters, and "~" (Python-Markdown keeps the backslash of "\\~"), as references.
_MARKUP_CHARS = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "~": "&#126;", **{c: f"\\{c}" for c in "\\`*_[]|"}}


def markdown_text(value: object) -> str:
    """``value`` (a piece of data: a user or item id, a title, a category) as literal text in the report's Markdown, in
    prose or a table cell: its control and invisible characters written as visible escapes (a newline would end a
    table row or a paragraph; :func:`conrec.console_text.visible`), each Markdown punctuation character that could start
    markup with a backslash (``user_42`` reads ``user\\_42``), and ``&``, ``<``, ``>`` and ``~`` as character references
    (Python-Markdown would show the backslash of ``\\~``).

    Why: the heavy-user note wrote the user id with ``repr``, which escapes newlines only, so the rendered report of a
    log with the user ``<img src=x onerror=alert(1)>`` ran that script in a browser, and an id holding ``**`` or a
    backtick was restyled. Every data-derived string the report writes goes through here."""
    return "".join(_MARKUP_CHARS.get(c, c) for c in visible(value))


def ks_of(metrics: dict[str, dict[str, Any]]) -> list[int]:
    """The cut-offs K present in ``metrics`` (from keys like ``FHR@20``), ascending."""
    found = {int(m[1]) for row in metrics.values() for key in row if (m := re.fullmatch(r"FHR@(\d+)", key))}
    return sorted(found)


def table_columns(ks: Sequence[int]) -> list[str]:
    """Report columns: FHR/HR/NDCG at each K; FPrec/LUF/LIF and coverage at the largest K; invalid rate."""
    cols = [f"{m}@{k}" for k in ks for m in RANKING_METRICS]
    if ks:
        cols += [f"{m}@{max(ks)}" for m in TAIL_METRICS]
        cols.append(f"Coverage@{max(ks)}")
    return cols + ["invalid_rate"]


def number_or_none(value: Any) -> float | None:
    """A table cell's value as a float, or None when it is missing/NaN/not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _best(metrics: dict[str, dict[str, Any]], col: str) -> float | None:
    """The best value of a column, or None when there is nothing to single out (all equal)."""
    values = [v for row in metrics.values() if (v := number_or_none(row.get(col))) is not None]
    if not values or len({f"{v:.4f}" for v in values}) == 1 and len(values) > 1:
        return None
    return min(values) if col in _LOWER_IS_BETTER else max(values)


def _present(metrics: dict[str, dict[str, Any]], cols: list[str]) -> list[str]:
    """Columns at least one model has (LUF/LIF are absent when not computable)."""
    return [c for c in cols if any(number_or_none(row.get(c)) is not None for row in metrics.values())]


def markdown_table(metrics: dict[str, dict[str, Any]], ks: Sequence[int]) -> str:
    """One row per model; the best value of each column in bold (ties all bold)."""
    cols = _present(metrics, table_columns(ks))
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    best = {c: _best(metrics, c) for c in cols}
    for model, row in metrics.items():
        cells = []
        for c in cols:
            v = number_or_none(row.get(c))
            if v is None:
                cells.append("–")
                continue
            text = f"{v:.4f}"
            cells.append(f"**{text}**" if best[c] is not None and f"{best[c]:.4f}" == text else text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interval_text(row: Mapping[str, Any], key: str) -> str:
    ci = row.get(key)
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or any(number_or_none(x) is None for x in ci):
        return ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def ci_cell(row: dict[str, Any], key: str) -> str:
    """``0.546 [0.486, 0.610]``: the value with its bootstrap CI ('–' when absent)."""
    v = number_or_none(row.get(key))
    return "–" if v is None else f"{v:.3f}{interval_text(row, key + '_ci')}"


def diff_cell(row: dict[str, Any], key: str) -> str:
    """``+0.021 [-0.010, 0.052] vs popularity``; '(reference)' for the best baseline itself."""
    d = number_or_none(row.get(key + "_diff"))
    if d is None:
        return "(best baseline)" if is_reference(row, key) else "–"
    return f"{d:+.3f}{interval_text(row, key + '_diff_ci')} vs {row.get(key + '_vs', '?')}"


def ci_keys(metrics: dict[str, dict[str, Any]], ks: Sequence[int]) -> list[str]:
    """Headline keys at the largest K that carry a CI, in registry order."""
    if not ks:
        return []
    k = max(ks)
    return [f"{m}@{k}" for m in ("FHR", "LUF", "LIF", "HR", "FPrec", "FRecall", "NDCG")
            if any(f"{m}@{k}_ci" in row for row in metrics.values())]


def ci_table(metrics: dict[str, dict[str, Any]], ks: Sequence[int]) -> str | None:
    """Markdown: each headline metric at the largest K with its CI, and the paired difference vs the
    best baseline with its CI; None when no CI was computed."""
    keys = ci_keys(metrics, ks)
    if not keys:
        return None
    label = ci_label(metrics)
    head = " | ".join(f"{k} [{label}] | Δ{k} vs best baseline [CI]" for k in keys)
    lines = [f"| model | {head} |", "|---|" + "---:|---|" * len(keys)]
    for model, row in metrics.items():
        lines.append(f"| {model} | " + " | ".join(f"{ci_cell(row, k)} | {diff_cell(row, k)}" for k in keys) + " |")
    first = next(iter(metrics.values()), {})
    sizes = [f"{m} over {int(first[f'n_samples_{m}'])}" for m in ("LUF", "LIF") if number_or_none(first.get(f"n_samples_{m}")) is not None]
    if sizes:
        lines += ["", f"Points in the long-tail populations: {', '.join(sizes)} of {int(first.get('n_samples', 0))}."]
    return "\n".join(lines)


def swap_table(metrics: dict[str, dict[str, Any]]) -> str | None:
    """Markdown: FHR@K with the user's own history vs another user's, and the top-K overlap."""
    found = sorted({int(m[1]) for row in metrics.values() for key in row if (m := re.fullmatch(r"swap_FHR@(\d+)", key))})
    if not found:
        return None
    k = max(found)
    lines = [f"| model | FHR@{k} own history | FHR@{k} another user's history | top-{k} overlap |", "|---|---:|---:|---:|"]
    for model, row in metrics.items():
        own, sw, ov = (number_or_none(row.get(c)) for c in (f"FHR@{k}", f"swap_FHR@{k}", f"swap_overlap@{k}"))
        if sw is None:
            continue
        lines.append(f"| {model} | {own if own is not None else float('nan'):.4f} | {sw:.4f} | {ov if ov is not None else float('nan'):.0%} |")
    return "\n".join(lines)


def tuning_section(tuning: dict[str, dict[str, Any]]) -> str:
    """Markdown: each baseline's chosen settings and the valid FHR@k of every grid point tried; where every point
    tied (``tied``), the chosen cell says that the first point was kept."""
    k = next((t["k"] for t in tuning.values() if "k" in t), "k")
    lines = [
        "## Baseline tuning (valid split)",
        "",
        "Each grid point was fitted on the events before the valid period and scored on the valid samples; "
        "the best was refitted on the events before the evaluated period. Test was never used.",
        "",
        f"| baseline | chosen | valid FHR@{k} | grid (valid FHR@{k} per point) |",
        "|---|---|---:|---|",
    ]
    for name, t in tuning.items():
        chosen = ", ".join(f"{k}={v}" for k, v in t.get("chosen", {}).items()) or "(no grid)"
        if t.get("tied"):
            chosen = f"tie, first point kept: {chosen}"
        tried = "; ".join(
            (", ".join(f"{k}={v}" for k, v in e["params"].items()) or "the settings") + f": {e['valid_fhr']:.3f}"
            for e in t.get("tried", [])
        )
        lines.append(f"| {name} | {chosen} | {t.get('valid_fhr', float('nan')):.4f} | {tried} |")
    return "\n".join(lines)


# Plots are sized for a report page: at most PAGE_WIDTH_IN inches wide at the saved dpi (~1,100 px).
PAGE_WIDTH_IN = 9.0
_DPI = 120


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _figure_legend(fig: Any, axes: Sequence[Any], n_entries: int) -> None:
    """One legend for the whole figure, below the panels, so it never covers data."""
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        return
    fig.legend(handles, labels, loc="lower center", ncols=min(n_entries, 4), fontsize="small", frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    rows = -(-n_entries // min(n_entries, 4))
    fig.subplots_adjust(bottom=0.18 + 0.06 * rows)


def plot_metrics(metrics: dict[str, dict[str, float]], ks: Sequence[int], path: Path) -> Path:
    """``metrics.png``: see :func:`metrics_figure`."""
    return _save(metrics_figure(metrics, ks), path)


def metrics_figure(metrics: dict[str, dict[str, float]], ks: Sequence[int]) -> Any:
    """Small multiples: one panel per metric (FHR, HR, NDCG), K on the x axis, one bar per model.

    Panels keep their own y scale (the metrics differ by an order of magnitude); within a panel
    the bars of every model and K are directly comparable. One legend, below the panels.
    """
    models = list(metrics)
    names = [m for m in RANKING_METRICS if any(f"{m}@{k}" in row for row in metrics.values() for k in ks)]
    names = names or list(RANKING_METRICS)
    fig, axes = plt.subplots(1, len(names), figsize=(PAGE_WIDTH_IN, 3.4), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for ax, name in zip(axes[0], names):
        for i, model in enumerate(models):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(ks))]
            ax.bar(xs, [metrics[model].get(f"{name}@{k}", 0.0) for k in ks], width=width, label=model, color=f"C{i}")
        ax.set_xticks(range(len(ks)))
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(f"{name}@K", fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("value")
    fig.suptitle("FHR@K: future dislikes within N days; HR@K, NDCG@K: the next dislike", fontsize="medium")
    fig.tight_layout()
    _figure_legend(fig, axes[0], len(models))
    return fig


def horizon_curves(metrics: dict[str, dict[str, float]], metric: str = "FHR") -> dict[int, dict[str, list[tuple[float, float]]]]:
    """``K -> model -> [(horizon_days, value), ...]`` from the flat per-horizon keys."""
    out: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for model, row in metrics.items():
        for key, value in row.items():
            parsed = parse_horizon_key(key)
            if parsed is None or parsed[0] != metric:
                continue
            out.setdefault(parsed[1], {}).setdefault(model, []).append((parsed[2], value))
    for per_model in out.values():
        for pts in per_model.values():
            pts.sort()
    return out


def plot_fhr_vs_horizon(metrics: dict[str, dict[str, float]], path: Path) -> Path | None:
    """``fhr_vs_horizon.png`` (None without per-horizon keys): see :func:`fhr_vs_horizon_figure`."""
    fig = fhr_vs_horizon_figure(metrics)
    return _save(fig, path) if fig is not None else None


def fhr_vs_horizon_figure(metrics: dict[str, dict[str, float]]) -> Any:
    """FHR@K against the future window N (days), one line per model, one panel per K (shared y axis,
    so the panels compare directly), one legend below the panels."""
    curves = horizon_curves(metrics)
    if not curves:
        return None
    ks = sorted(curves)
    models = list(dict.fromkeys(m for k in ks for m in curves[k]))
    fig, axes = plt.subplots(1, len(ks), figsize=(PAGE_WIDTH_IN, 3.4), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], ks):
        for model in models:
            pts = curves[k].get(model)
            if pts:
                ax.plot([h for h, _ in pts], [v for _, v in pts], marker="o", ms=4, label=model,
                        color=f"C{models.index(model)}")
        ax.set_title(f"FHR@{k}", fontsize="medium")
        ax.set_xticks(sorted({h for pts in curves[k].values() for h, _ in pts}))
        ax.set_xlabel("future window N (days)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("FHR")
    axes[0][0].set_ylim(bottom=0)
    fig.suptitle("Hit ratio against the multi-day future dislike set", fontsize="medium")
    fig.tight_layout()
    _figure_legend(fig, axes[0], len(models))
    return fig


def load_reward_log(path: Path) -> list[dict[str, Any]]:
    """GRPO reward log: a JSON list of {stage, stage_index, step, reward, components}."""
    log = read_json(path, what="GRPO reward log")
    if not isinstance(log, list):
        raise StageInputError(f"GRPO reward log {path} must be a JSON list, got {type(log).__name__}")
    for n, entry in enumerate(log):
        if not isinstance(entry, dict) or not {"stage", "stage_index", "step", "reward"} <= set(entry):
            raise StageInputError(f"GRPO reward log {path}: entry {n} lacks stage/stage_index/step/reward: {entry!r}")
    return sorted(log, key=lambda e: (int(e["stage_index"]), int(e["step"])))


def plot_grpo_rewards(log: list[dict[str, Any]], path: Path) -> Path | None:
    """``grpo_rewards.png`` (None for an empty log): see :func:`grpo_rewards_figure`."""
    fig = grpo_rewards_figure(log)
    return _save(fig, path) if fig is not None else None


def grpo_rewards_figure(log: list[dict[str, Any]]) -> Any:
    """Mean reward per logged step across the progressive stages, stage boundaries marked (names
    above the plot area), plus the reward components (dashed) when logged; legend below."""
    if not log:
        return None
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN * 0.8, 3.6))
    xs = list(range(len(log)))
    ax.plot(xs, [float(e["reward"]) for e in log], color="black", lw=1.5, label="reward")
    components = sorted({name for e in log for name in (e.get("components") or {})})
    for i, name in enumerate(components):
        pts = [
            (x, float(v))
            for x, e in zip(xs, log)
            if isinstance(v := (e.get("components") or {}).get(name), (int, float))
        ]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", lw=1, label=f"{name} (unweighted)", color=f"C{i}")
    starts = [x for x, (a, b) in enumerate(zip([None, *log[:-1]], log)) if a is None or a["stage_index"] != b["stage_index"]]
    for x in starts:
        if x:
            ax.axvline(x - 0.5, color="grey", ls=":", lw=1)
        # x in data units, y just above the axes: the labels never sit on a curve
        ax.text(x - 0.5 if x else 0, 1.01, f" {log[x]['stage']}", va="bottom", fontsize="small", color="grey",
                transform=ax.get_xaxis_transform())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("logged step (all stages)")
    # the dashed components are logged unweighted (some only for inspection): they do not add up to the reward
    ax.set_ylabel("reward (black); components (dashed)")
    ax.set_title("Progressive GRPO: reward per step", pad=16, fontsize="medium")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _figure_legend(fig, [ax], 1 + len(components))
    return fig


def load_learning_curve(sft_stats: Path) -> dict[str, Any] | None:
    """The SFT stage's valid learning curve (``early_stopping`` in ``sft/stats.json``), None without one."""
    if not sft_stats.exists():
        return None
    found = read_json(sft_stats, what="SFT stats").get("early_stopping")
    return found if isinstance(found, dict) and found.get("learning_curve") else None


def learning_curve_section(curve: dict[str, Any]) -> str:
    """Markdown: valid FHR@K at each evaluated SFT step, the chosen (best) step marked."""
    k = int(curve["k"])
    lines = [f"## SFT learning curve (valid FHR@{k}, early stopping)", "", f"| step | valid FHR@{k} |", "|---:|---:|"]
    for point in curve["learning_curve"]:
        mark = " (chosen)" if int(point["step"]) == int(curve["best_step"]) else ""
        lines.append(f"| {int(point['step'])}{mark} | {float(point[f'FHR@{k}']):.4f} |")
    return "\n".join(lines)


def learning_curve_figure(curve: dict[str, Any]) -> Any:
    """Valid FHR@K against SFT steps, the chosen step marked."""
    k = int(curve["k"])
    steps = [float(p["step"]) for p in curve["learning_curve"]]
    values = [float(p[f"FHR@{k}"]) for p in curve["learning_curve"]]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN * 0.6, 3.2))
    ax.plot(steps, values, marker="o", color="black", lw=1.5)
    ax.axvline(float(curve["best_step"]), color="grey", ls=":", lw=1)
    ax.set_xlabel("SFT optimiser step")
    ax.set_ylabel(f"valid FHR@{k}")
    ax.set_title("SFT learning curve (best step dotted)", fontsize="medium")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _stats_section(stats: dict[str, Any]) -> str:
    if not stats:
        return "_no dataset statistics available_"
    lines = ["| statistic | value |", "|---|---:|"]
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else ", ".join(map(str, value))
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


HEAVY_USER_SHARE = 0.10
"""A user holding more than this share of the evaluated points (and more than one) gets a note under the Dataset table."""


def heavy_user_note(run: RunDir, models: Sequence[str]) -> str | None:
    """A note when one user holds a large share of the evaluated points, else None: which share, of how many points.

    Why: one user's points are not independent (the same history, the same tastes). Under the per-user protocol one
    user with half of a log's events held 30 of 50 evaluated points, and nothing but "evaluated users 21" in the table
    hinted that the FHR and its interval were mostly that user's (the intervals resample the users there, so they
    are wide, but they rest on few users). The points are those of the evaluated models' predictions (every model ranks the same points), their users
    those of the data stage's samples.
    """
    preds = next((p for m in models if (p := run.predictions / f"{m}.parquet").exists()), None)
    if preds is None or not run.samples.exists():
        return None
    points = pl.read_parquet(preds, columns=["sample_id"])
    per_user = (pl.scan_parquet(run.samples).select("sample_id", "user_id").join(points.lazy(), on="sample_id", how="semi")
                .group_by("user_id").agg(n=pl.len()).sort(["n", "user_id"], descending=[True, False]).collect())
    total = int(per_user["n"].sum()) if per_user.height else 0
    if not total:
        return None
    user, n = per_user.row(0)
    if n < 2 or n / total <= HEAVY_USER_SHARE:
        return None
    return (f"One user ('{markdown_text(user)}') holds {n:,} of the {total:,} evaluated points ({n / total:.0%}): the figures are largely that "
            "user's outcomes, and the confidence intervals (which resample users) rest on that user's draws.")


def write_report(
    run_dir: str | Path,
    metrics: dict[str, dict[str, float]],
    dataset_stats: dict[str, Any],
    extra_sections: list[str] | None = None,
) -> Path:
    """Write ``eval/report.md`` and the PNG plots under ``run_dir``; return the report's path.

    Plots: ``metrics.png`` always; ``fhr_vs_horizon.png`` when per-horizon keys are present;
    ``grpo_rewards.png`` when GRPO is evaluated and ``grpo/reward_log.json`` exists.
    """
    run = RunDir(run_dir)
    run.eval.mkdir(parents=True, exist_ok=True)
    ks = ks_of(metrics)
    plots: list[Path] = []
    if metrics:
        plots.append(plot_metrics(metrics, ks, run.eval / "metrics.png"))
    horizon_plot = plot_fhr_vs_horizon(metrics, run.eval / "fhr_vs_horizon.png")
    if horizon_plot:
        plots.append(horizon_plot)
    reward_log = run.grpo / "reward_log.json"
    if "grpo" in metrics and reward_log.exists():  # a GRPO not evaluated here may be stale (trained from another SFT model)
        reward_plot = plot_grpo_rewards(load_reward_log(reward_log), run.eval / "grpo_rewards.png")
        if reward_plot:
            plots.append(reward_plot)

    curve = load_learning_curve(run.sft / "stats.json")
    if curve is not None:
        plots.append(_save(learning_curve_figure(curve), run.eval / "sft_learning_curve.png"))

    parts = [
        "# conrec evaluation report",
        "",
        "FHR@K: share of evaluation points with at least one top-K item among the user's dislikes "
        "of the future window (the CoNRec hit ratio); FPrec@K: share of the K slots that are such "
        "dislikes; LUF@K / LIF@K: FHR@K over long-tail users (< 3 dislikes before t) / counting only "
        "long-tail items (< 5 training dislikes). HR@K / NDCG@K: against the single next dislike (the "
        "conventional target). Coverage: share of the catalogue recommended to anyone. Invalid rate: "
        "generated candidates that named no real item (0 for baselines). Best value per column in bold.",
        "",
        "## Dataset",
        "",
        _stats_section(dataset_stats),
        "",
        *([f"Note: {note}", ""] if (note := heavy_user_note(run, list(metrics))) else []),
        "## Results",
        "",
        markdown_table(metrics, ks) if metrics else "_no model was evaluated_",
    ]
    cis = ci_table(metrics, ks)
    if cis:
        parts += ["", "### Confidence intervals (percentile bootstrap; the Dataset table says what was resampled) and paired differences", "", cis]
    swaps = swap_table(metrics)
    if swaps:
        parts += ["", "### Context swap (each point ranked with another user's history)", "", swaps]
    curves = horizon_curves(metrics)
    if curves:
        k = max(curves)
        horizons = sorted({h for pts in curves[k].values() for h, _ in pts})
        parts += ["", f"### FHR@{k} against the future window N (days)", ""]
        parts.append("| model | " + " | ".join(f"N={h:g}" for h in horizons) + " |")
        parts.append("|---|" + "---:|" * len(horizons))
        for model, pts in curves[k].items():
            by_h = dict(pts)
            parts.append(f"| {model} | " + " | ".join(f"{by_h[h]:.4f}" if h in by_h else "–" for h in horizons) + " |")
    if curve is not None:
        parts += ["", learning_curve_section(curve)]
    for section in extra_sections or []:
        parts += ["", section.rstrip()]
    if plots:
        parts += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return write_text("\n".join(parts) + "\n", run.report)
