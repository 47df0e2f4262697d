"""Figures of a job's results, drawn from its ``comparison.json`` (matplotlib, Agg).

Two kinds of figure, written as PNG into ``<result dir>/plots/`` and logged to MLflow:

- ``f1_vs_evaluations.png``: best tuning macro F1 so far against evaluations spent, one line per
  strategy, on the same integer axis as the ``tuning_f1_curve`` metric (:func:`curve_points`);
- ``class_f1.png``: per-class F1 bars (held-out and tuning clips), one bar per strategy, and
  ``class_f1.<strategy>.png``: one strategy's per-class F1 against the manual setting.

Every figure is drawn on its own :class:`matplotlib.figure.Figure` with an Agg canvas, so no
pyplot state or global backend is touched.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

LOG = logging.getLogger(__name__)

DPI = 110


def curve_points(trajectory: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """The F1 curve on an integer axis: ``(step, best tuning macro F1 so far)``.

    ``step`` is ``ceil(evaluations)`` (full-set evaluations, rounded up, so strategies that
    count fractional evaluations share the axis of the others). Every trajectory point gives
    one point; where several fall on the same step, the step keeps the last one (the best so
    far at the end of that step), so steps are strictly increasing. Points without a finite F1
    are left out.

    Args:
        trajectory: ``comparison.json`` trajectory points (``evaluations``, ``best_f``).

    Returns:
        ``(step, f1)`` pairs, steps strictly increasing.
    """
    by_step: dict[int, float] = {}
    for p in trajectory:
        ev, f = p.get("evaluations"), p.get("best_f")
        if ev is None or f is None or not math.isfinite(float(f)):
            continue
        by_step[max(0, math.ceil(float(ev) - 1e-9))] = float(f)
    return sorted(by_step.items())


def primary_rows(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per strategy: the job's selection, else ``fixed``, else its first row.

    Args:
        comparison: Parsed ``comparison.json``.
    """
    selection = comparison.get("selection", "robust")
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for row in comparison["rows"]:
        by_strategy.setdefault(row["strategy"], []).append(row)
    out = []
    for rows in by_strategy.values():
        pick = next((r for r in rows if r["selection"] == selection), None)
        pick = pick or next((r for r in rows if r["selection"] == "fixed"), None)
        out.append(pick or rows[0])
    return out


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _new_figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _value(x: Any) -> float:
    return float("nan") if x is None else float(x)


def plot_f1_vs_evaluations(comparison: Mapping[str, Any], path: str) -> str:
    """Best tuning macro F1 against evaluations spent, every strategy in one figure.

    Args:
        comparison: Parsed ``comparison.json``.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    rows = primary_rows(comparison)
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    max_step = max((s for r in rows for s, _ in curve_points(r["trajectory"])), default=1)
    for row, color in zip(rows, _colors(len(rows)), strict=True):
        pts = curve_points(row["trajectory"])
        if not pts:
            continue
        label = f"{row['strategy']} (held-out {_value(row['heldout_f']['mean']):.3f})"
        if row["strategy"] == "manual" or len(pts) == 1:
            ax.axhline(pts[-1][1], color=color, linestyle="--", linewidth=1.2, label=label)
            continue
        steps, fs = zip(*pts, strict=True)
        ax.step(steps, fs, where="post", color=color, linewidth=1.8, label=label)
        ax.plot(steps, fs, "o", color=color, markersize=3.5)
    ax.set_xlim(0, max(max_step, 1) + 0.5)
    ax.set_xlabel("full-set evaluations spent (ceil)")
    ax.set_ylabel("best tuning macro F1 so far")
    ax.set_title(
        f"job {comparison.get('job', '?')}: tuning F1 against evaluations "
        f"(selection {comparison.get('selection', '?')})"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, format="png")
    return path


def plot_class_f1(comparison: Mapping[str, Any], path: str) -> str:
    """Per-class F1 bars for every strategy: held-out clips (top) and tuning clips (bottom).

    Args:
        comparison: Parsed ``comparison.json``.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    rows = primary_rows(comparison)
    classes: list[str] = list(comparison["classes"])
    fig = _new_figure(max(6.0, 1.3 * len(classes) + 3.0), 6.5)
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / max(len(rows), 1)
    xs = range(len(classes))
    for ax, part in zip(axes, ("heldout", "tuning"), strict=True):
        for i, (row, color) in enumerate(zip(rows, _colors(len(rows)), strict=True)):
            values = [_value(row[f"{part}_class_f"].get(c)) for c in classes]
            ax.bar(
                [x + (i - (len(rows) - 1) / 2) * width for x in xs],
                values,
                width,
                color=color,
                label=f"{row['strategy']}/{row['selection']}",
            )
        ax.set_ylabel(f"{'held-out' if part == 'heldout' else 'tuning'} F1")
        ax.set_ylim(0, 1)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title(f"job {comparison.get('job', '?')}: per-class event-based F1")
    axes[0].legend(fontsize=8, ncols=min(len(rows), 4), loc="upper left")
    axes[1].set_xticks(list(xs), classes, rotation=30, ha="right")
    fig.savefig(path, format="png")
    return path


def plot_strategy_class_f1(comparison: Mapping[str, Any], strategy: str, path: str) -> str:
    """One strategy's per-class F1 (tuning and held-out) with the manual setting's as markers.

    Args:
        comparison: Parsed ``comparison.json``.
        strategy: Strategy name.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    rows = {r["strategy"]: r for r in primary_rows(comparison)}
    row, manual = rows[strategy], rows.get("manual")
    classes: list[str] = list(comparison["classes"])
    fig = _new_figure(max(5.0, 1.0 * len(classes) + 2.5), 4.0)
    ax = fig.add_subplot()
    xs = list(range(len(classes)))
    c_tune, c_held, c_manual = _colors(3)
    ax.bar(
        [x - 0.2 for x in xs],
        [_value(row["tuning_class_f"].get(c)) for c in classes],
        0.4,
        color=c_tune,
        label="tuning clips",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [_value(row["heldout_class_f"].get(c)) for c in classes],
        0.4,
        color=c_held,
        label="held-out clips",
    )
    if manual is not None and strategy != "manual":
        ax.plot(
            [x + 0.2 for x in xs],
            [_value(manual["heldout_class_f"].get(c)) for c in classes],
            "D",
            color=c_manual,
            label="manual, held-out",
        )
    ax.set_xticks(xs, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("event-based F1")
    ax.set_title(f"{strategy}/{row['selection']}: per-class F1")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")
    return path


def write_plots(comparison: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """Write every figure into ``out_dir``.

    Args:
        comparison: Parsed ``comparison.json``.
        out_dir: Directory for the PNG files (created if missing).

    Returns:
        Paths by name: ``f1_vs_evaluations``, ``class_f1`` and ``class_f1/<strategy>``.
    """
    os.makedirs(out_dir, exist_ok=True)

    def at(name: str) -> str:
        return os.path.join(out_dir, name)

    paths = {
        "f1_vs_evaluations": plot_f1_vs_evaluations(comparison, at("f1_vs_evaluations.png")),
        "class_f1": plot_class_f1(comparison, at("class_f1.png")),
    }
    for row in primary_rows(comparison):
        s = row["strategy"]
        paths[f"class_f1/{s}"] = plot_strategy_class_f1(comparison, s, at(f"class_f1.{s}.png"))
    LOG.info("wrote %d figures to %s", len(paths), out_dir)
    return paths
