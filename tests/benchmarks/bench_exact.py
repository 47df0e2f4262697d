"""Benchmark: the exact strategy's wall time on one tuning half, two spaces.

On desed-validation/dcase2021-baseline-student, the first seeded 50/50 split (584 tuning
clips), it runs the exact strategy with no budget (every threshold at which a decision
changes, up to its candidate cap) over

- the frames space of issue 15: kernels 1, 3, ..., 21 x gap filling {0, 0.1, 0.2, 0.3, 0.5,
  0.75, 1.0} s x minimum duration {0, 0.1, 0.2, 0.3, 0.5} s = 385 settings per class;
- the job's default space (both decoders),

and prints the strategy's wall seconds per split beside a reference measured in the same run:
one sed_eval evaluation of the same 584 clips at the manual setting (how long the metric
itself takes on this machine now), and the evaluations exact counted.

Goal (issue 15): exact over the 385-setting frames space in at most 20 s per tuning half.

Run: python tests/benchmarks/bench_exact.py [--ray] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from envs.evalset import open_eval_set
from envs.evaluator import Evaluator
from envs.importers import import_tsv_folder
from envs.metrics.sed_eval_oracle import sed_eval_event_counts
from envs.params import ClassParams
from envs.split import split_names
from service.tuning.runner import run_job
from service.tuning.spec import parse_spec

FRAMES_385 = {
    "decoders": ["frames"],
    "kernels": list(range(1, 22, 2)),
    "fill_gap_s": [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0],
    "min_duration_s": [0.0, 0.1, 0.2, 0.3, 0.5],
}
GOAL_S = 20.0


def exact_seconds(
    scores: str, base: Path, space: dict | None, out: str, use_ray: bool
) -> tuple[float, float, int]:
    """(exact's wall seconds, evaluations, settings per class) on split 0."""
    spec: dict = {
        "name": "bench-exact",
        "data": {
            "scores": scores,
            "ground_truth": str(base / "ground_truth.tsv"),
            "durations": str(base / "durations.tsv"),
        },
        "heldout": {"fraction": 0.5, "seed": 0, "splits": 1},
        "strategies": [{"name": "exact"}],
        "resources": {"num_cpus": 2},
        "tracking": {"enabled": False},
        "output": out,
    }
    if space is not None:
        spec["space"] = space
    parsed = parse_spec(spec)
    result = run_job(parsed, use_ray=use_ray)
    row = next(r for r in result.rows if r.strategy == "exact" and r.selection == "robust")
    return row.wall_s, row.evaluations, len(parsed.space.to_space().settings)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ray", action="store_true", help="exact's tasks on a local Ray (default: in-process)")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    args = ap.parse_args()
    base = Path(args.shared) / "desed-validation"
    with tempfile.TemporaryDirectory() as tmp:
        scores = f"{tmp}/scores"
        import_tsv_folder(str(base / "dcase2021-baseline-student" / "scores"), scores)
        data = open_eval_set(scores, str(base / "ground_truth.tsv"), str(base / "durations.tsv"))
        tune_idx, _ = split_names(data.filenames, 0.5, 0)
        tuning = data.subset(tune_idx)
        ev = Evaluator(tuning)
        manual = ClassParams(median_filter_frames=7, threshold=0.5)
        events = {c: ev.events(c, manual) for c in tuning.classes}
        t0 = time.perf_counter()
        sed_eval_event_counts(tuning.filenames, tuning.classes, tuning.refs, events, 0.2, 0.2)
        ref_s = time.perf_counter() - t0
        rows = []
        for name, space in (("frames, 385 settings", FRAMES_385), ("default (both decoders)", None)):
            wall, evals, n_settings = exact_seconds(scores, base, space, f"{tmp}/out-{len(rows)}", args.ray)
            rows.append((name, n_settings, evals, wall))
    where = "local Ray" if args.ray else "in-process"
    n_clips, n_classes = len(tune_idx), len(data.classes)
    print(f"set: dcase2021-baseline-student, split 0: {n_clips} tuning clips x {n_classes} classes")
    print(f"reference: one sed_eval evaluation of those clips (manual setting): {ref_s:.2f} s")
    head = f"{'space':26s} {'settings':>9s} {'evaluations':>12s} {'exact wall s':>13s} {'x sed_eval':>11s}"
    print(f"{head}  ({where})")
    for name, n_settings, evals, wall in rows:
        print(f"{name:26s} {n_settings:9d} {evals:12.0f} {wall:13.1f} {wall / ref_s:11.1f}")
    ok = rows[0][3] <= GOAL_S
    verdict = "PASS" if ok else "FAIL"
    print(f"goal (issue 15) exact over the 385-setting frames space <= {GOAL_S:.0f} s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
