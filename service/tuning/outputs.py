"""Writing a job's results: parameter files, comparison table (JSON and Markdown), trials, figures.

Where they go, and when they become the output folder's, is :mod:`service.tuning.staging`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from envs.params import ClassParams, ParamFile
from envs.space import Setting

if TYPE_CHECKING:
    from service.tuning.runner import JobResult, Row


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def row_json(r: Row) -> dict[str, Any]:
    """One comparison row as JSON."""
    return {
        "strategy": r.strategy,
        "selection": r.selection,
        "tuning_f": {"mean": _num(r.tuning_f_mean), "std": _num(r.tuning_f_std)},
        "heldout_f": {"mean": _num(r.heldout_f_mean), "std": _num(r.heldout_f_std)},
        "gain_over_manual": {
            "mean": _num(r.gain.gain),
            "ci95": [_num(r.gain.low), _num(r.gain.high)],
            "significant": bool(r.gain.significant),
        },
        "evaluations": _num(r.evaluations),
        "wall_s": _num(r.wall_s),
        "heldout_class_f": {k: _num(v) for k, v in r.heldout_class_f.items()},
        "tuning_class_f": {k: _num(v) for k, v in r.tuning_class_f.items()},
        "heldout_class": {c: {k: _num(v) for k, v in d.items()} for c, d in r.heldout_class.items()},
        "tuning_class": {c: {k: _num(v) for k, v in d.items()} for c, d in r.tuning_class.items()},
        "params": None if r.params is None else {c: p.to_json() for c, p in r.params.items()},
        "trajectory": [
            {"evaluations": _num(p.evaluations), "best_f": _num(p.best_f), "wall_s": _num(p.wall_s)}
            for p in r.trajectory
        ],
    }


def versions() -> dict[str, str]:
    """Versions of sedtune and of the stack it ran on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sedtune", "ray", "sed_eval", "numpy", "mlflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def comparison_json(result: JobResult) -> dict[str, Any]:
    """The whole comparison as JSON-ready data."""
    return {
        "job": result.spec.name,
        "job_id": result.job_id,
        "dataset_fingerprint": result.fingerprint,
        "versions": versions(),
        "seed": result.spec.seed,
        "frame_hop_s": result.frame_hop_s,
        "classes": result.classes,
        "splits": result.splits,
        "selection": result.spec.selection,
        "recommended": result.recommended.key,
        "message": result.message,
        "wall_s": _num(result.wall_s),
        "rows": [row_json(r) for r in result.rows],
    }


def describe(p: ClassParams | None) -> str:
    """One class's decoder and parameters in a few words, e.g. ``boxes k1 L0.48 abs0.2 mean θ0.412``."""
    if p is None:
        return "n/a"
    text = f"{Setting.of(p).label()} θ{p.threshold:.3f}"
    return text + (f" off{p.threshold_off:.3f}" if p.threshold_off is not None else "")


def decoder_mix(params: dict[str, ClassParams] | None) -> str:
    """How many classes use each decoder, e.g. ``boxes 9, frames 1``."""
    if not params:
        return "n/a"
    counts = Counter(p.decoder for p in params.values())
    return ", ".join(f"{d} {n}" for d, n in sorted(counts.items()))


def comparison_markdown(result: JobResult) -> str:
    """The comparison as a Markdown table plus per-class F of the recommendation."""

    def pct(x: float) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:.4f}"

    lines = [
        f"# sedtune job `{result.spec.name}`",
        "",
        f"{result.splits} split(s), selection `{result.spec.selection}`. {result.message}",
        "",
        "| strategy | selection | tuning F1 | held-out F1 | gain vs manual (95% CI) | evaluations | wall s "
        "| decoders |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rows:
        g = r.gain
        gain = (
            "n/a" if math.isnan(g.gain) else f"{100 * g.gain:+.2f} ({100 * g.low:+.2f}, {100 * g.high:+.2f})"
        )
        spread = f" ± {r.heldout_f_std:.4f}" if result.splits > 1 else ""
        tspread = f" ± {r.tuning_f_std:.4f}" if result.splits > 1 else ""
        mark = " **(recommended)**" if r is result.recommended else ""
        lines.append(
            f"| {r.strategy}{mark} | {r.selection} | {pct(r.tuning_f_mean)}{tspread} | "
            f"{pct(r.heldout_f_mean)}{spread} | {gain} | {r.evaluations:.1f} | {r.wall_s:.1f} "
            f"| {decoder_mix(r.params)} |"
        )
    rec = result.recommended
    lines += [
        "",
        f"## Per-class held-out F1 of {rec.key}",
        "",
        "| class | decoder and parameters | tuning F1 | held-out F1 |",
        "|---|---|---|---|",
    ]
    for c in result.classes:
        lines.append(
            f"| {c} | {describe(rec.params.get(c)) if rec.params else 'n/a'} | "
            f"{pct(rec.tuning_class_f.get(c, math.nan))} | {pct(rec.heldout_class_f.get(c, math.nan))} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(result: JobResult, into: str | None = None) -> dict[str, str]:
    """Write parameter files, the comparison, trials and figures; returns the paths by name.

    Args:
        result: The job's result; the paths recorded (returned, in ``artifacts.json`` and in
            ``result.artifacts``) are under ``result.output_dir``.
        into: The folder the files are written into, when it is not ``result.output_dir``
            yet (a staging folder, :mod:`service.tuning.staging`, published afterwards); a
            strategy's file under ``into`` is recorded at its published place.
    """
    out = into or result.output_dir

    def published(path: str) -> str:
        rel = os.path.relpath(path, out)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return path  # not written here (a strategy's file in the job's own folder)
        return os.path.normpath(os.path.join(result.output_dir, rel))

    os.makedirs(os.path.join(out, "params"), exist_ok=True)
    paths: dict[str, str] = {}
    for r in result.rows:
        if r.params is None:
            continue
        pf = ParamFile(
            result.frame_hop_s,
            dict(r.params),
            {"job": result.spec.name, "strategy": r.strategy, "selection": r.selection},
        )
        path = os.path.join(out, "params", f"{r.strategy}.{r.selection}.json")
        pf.save(path)
        paths[f"params/{r.key}"] = path
    rec = result.recommended
    if rec.params is not None:
        best = os.path.join(out, "best_params.json")
        ParamFile(
            result.frame_hop_s,
            dict(rec.params),
            {
                "job": result.spec.name,
                "strategy": rec.strategy,
                "selection": rec.selection,
                "heldout_f": _num(rec.heldout_f_mean),
                "message": result.message,
            },
        ).save(best)
        paths["best_params"] = best
    cj = os.path.join(out, "comparison.json")
    comparison = comparison_json(result)
    with open(cj, "w", encoding="utf-8") as f:
        json.dump(comparison, f, indent=2)
    md = os.path.join(out, "comparison.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(comparison_markdown(result))
    spec_path = os.path.join(out, "spec.resolved.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(result.spec.model_dump(mode="json"), f, indent=2)
    paths.update({"comparison_json": cj, "comparison_md": md, "spec": spec_path})
    for name, res_list in result.results.items():
        for key, val in res_list[0].artifacts.items():
            paths[f"{name}/{key}"] = val  # where the strategy wrote it; published place below
        trials = res_list[0].info.get("trials_detail")
        if trials:
            tp = os.path.join(out, f"trials.{name}.json")
            with open(tp, "w", encoding="utf-8") as f:
                json.dump(trials, f, indent=2)
            paths[f"trials/{name}"] = tp
    try:
        from service.results.plots import write_plots

        for name, path in write_plots(comparison, os.path.join(out, "plots")).items():
            paths[f"plots/{name}"] = path
    except ImportError:  # matplotlib is optional for the data commands, not for jobs
        pass
    paths = {k: published(v) for k, v in paths.items()}
    with open(os.path.join(out, "artifacts.json"), "w", encoding="utf-8") as f:
        json.dump(paths, f, indent=2)
    result.artifacts.update(paths)
    return paths
