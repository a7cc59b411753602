"""Plots sized for a report page (issue 14): page width, shared y where values compare, legends off the data."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from conrec.eval.metrics import horizon_key
from conrec.eval.report import (
    PAGE_WIDTH_IN,
    fhr_vs_horizon_figure,
    grpo_rewards_figure,
    metrics_figure,
    plot_metrics,
)

MODELS = ["popularity", "itemknn", "category", "sasrec", "sft", "grpo"]  # the demo's six rows
KS = [5, 10, 20]


def _metrics() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for i, model in enumerate(MODELS):
        row: dict[str, float] = {}
        for k in KS:
            row[f"FHR@{k}"], row[f"HR@{k}"], row[f"NDCG@{k}"] = 0.01 * (i + 1), 0.05 * (i + 1), 0.02 * (i + 1)
            for h in (1, 3, 7, 14):
                row[horizon_key("FHR", k, h)] = 0.001 * h * (i + 1)
        row["invalid_rate"] = 0.0
        out[model] = row
    return out


def _log() -> list[dict]:
    return [
        {"stage": s, "stage_index": si, "step": n, "reward": 0.1 * n, "components": {"hit": 0.2, "collab": 0.05 * n}}
        for n, (si, s) in enumerate([(0, "neg_only")] * 3 + [(1, "full")] * 3)
    ]


def _check_page_and_legend(fig) -> None:
    fig.canvas.draw()
    assert fig.get_figwidth() <= PAGE_WIDTH_IN + 1e-9 and fig.get_figheight() <= 4.0
    assert all(ax.get_legend() is None for ax in fig.axes), "per-axes legends sit on the data"
    assert len(fig.legends) == 1
    legend_box = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not legend_box.overlaps(ax.get_window_extent()), "the legend covers a panel"
    plt.close(fig)


def test_metrics_are_small_multiples_one_panel_per_metric() -> None:
    fig = metrics_figure(_metrics(), KS)
    assert [ax.get_title() for ax in fig.axes] == ["FHR@K", "HR@K", "NDCG@K"]
    assert all(len(ax.patches) == len(MODELS) * len(KS) for ax in fig.axes)
    _check_page_and_legend(fig)


def test_fhr_vs_horizon_panels_share_the_y_axis() -> None:
    fig = fhr_vs_horizon_figure(_metrics())
    first, *rest = fig.axes
    assert len(fig.axes) == len(KS)
    assert all(first.get_shared_y_axes().joined(first, ax) for ax in rest)
    assert all(ax.get_ylim() == first.get_ylim() for ax in rest)
    _check_page_and_legend(fig)


def test_grpo_legend_and_stage_labels_stay_off_the_curves() -> None:
    fig = grpo_rewards_figure(_log())
    ax = fig.axes[0]
    assert [t.get_text().strip() for t in ax.texts] == ["neg_only", "full"]  # the loop below checked nothing without them
    for text in ax.texts:  # stage names sit above the plot area
        assert text.get_window_extent().y0 >= ax.get_window_extent().y1 - 1
    _check_page_and_legend(fig)


def test_saved_png_is_page_sized(tmp_path: Path) -> None:
    from PIL import Image

    path = plot_metrics(_metrics(), KS, tmp_path / "metrics.png")
    width, height = Image.open(path).size
    assert width <= 1200 and height <= 500  # was 2106 x 489 for the demo's six models


@pytest.mark.parametrize("n_models", [1, 9])
def test_legend_layout_scales_with_models(n_models: int) -> None:
    metrics = {f"m{i}": _metrics()["grpo"] for i in range(n_models)}
    _check_page_and_legend(metrics_figure(metrics, KS))
