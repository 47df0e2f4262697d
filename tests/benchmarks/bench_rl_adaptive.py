"""Benchmark: rl's clip-adaptive policy where clips differ visibly (issue 12, item 3).

Generates the set of tests/integration/test_rl_adaptive.py (4 classes, clean events, every
clip's logits shifted by its own calibration offset, std ``--calibration`` logit units, so that
each clip's best threshold moves with something visible in the clip) and, as a control, the
same generator without the offsets. On each it runs one job (manual, exact and rl at the same
budget, ``--splits`` seeded 50/50 splits) and prints the comparison table, rl's seconds per
split, the gate's decisions and the paired bootstrap interval (the held-out clips of every
split) of ``rl/adaptive`` minus the job's best static recommendation: the size of what
adaptation gives. Goal (issue 12): a clear margin on the calibrated set (the test asks for at
least 1 point on one split); on the control, about nothing.

Run: python tests/benchmarks/bench_rl_adaptive.py [--splits 5] [--budget 200] [--clips 400]
     [--calibration 1.5] [--static-share 0.95]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_strategies import adaptive_vs_best_static

from envs.synth import generate
from envs.synth_config import SynthConfig
from service.tuning.outputs import comparison_markdown
from service.tuning.runner import JobResult, run_job
from service.tuning.spec import parse_spec

# The generator settings of the test (clean events, so that the threshold is what matters).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.integration.test_rl_adaptive import CALIBRATION_SD, CLEAN


def run(root: Path, calibration_sd: float, args: argparse.Namespace) -> JobResult:
    """Generate the set and run manual, exact and rl on it."""
    config = SynthConfig(**{**CLEAN, "n_clips": args.clips}, clip_calibration_std_logit=calibration_sd)
    synth = generate(str(root / "data"), config)
    spec = {
        "name": f"rl-adaptive-{calibration_sd:g}",
        "data": {"scores": synth.scores_uri, "ground_truth": synth.ground_truth_path,
                 "durations": synth.durations_path},
        "heldout": {"fraction": 0.5, "seed": 0, "splits": args.splits},
        "space": {"decoders": ["frames"], "kernels": [1, 5], "threshold": {"low": 0.02, "high": 0.98}},
        "manual": {"threshold": 0.5, "median_filter_s": 0.32},
        "strategies": [
            {"name": "manual"},
            {"name": "exact", "budget": args.budget},
            {"name": "rl", "budget": args.budget, "options": {"static_share": args.static_share}},
        ],
        "tracking": {"enabled": False},
        "output": str(root / "out"),
    }
    return run_job(parse_spec(spec, "bench spec"))


def report(title: str, result: JobResult) -> float | None:
    """Print the table, rl's cost and gate, and rl/adaptive minus the best static row."""
    print(f"\n## {title}\n")
    print(comparison_markdown(result).split("## Per-class")[0], flush=True)
    rl = next(r for r in result.rows if r.key == "rl/robust")
    print(f"rl: {rl.wall_s:.1f} s per split")
    for k, res in enumerate(result.results["rl"]):
        gate = res.info.get("gate") or {}
        print(f"  split {k}: {res.info.get('adaptive')}; adapted {gate.get('adapted', [])}")
    vs = adaptive_vs_best_static(result)
    if vs is None:
        return None
    key, g = vs
    print(f"rl/adaptive - {key} (best static), held-out: {100 * g.gain:+.2f} points "
          f"(95% CI {100 * g.low:+.2f} to {100 * g.high:+.2f})", flush=True)
    return g.low


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--budget", type=float, default=200)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--calibration", type=float, default=CALIBRATION_SD,
                    help="per-clip offset std (logit units)")
    ap.add_argument("--static-share", type=float, default=0.95, help="rl's share of the budget for its table")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        low = report(f"calibrated: per-clip offsets, std {args.calibration:g} logit",
                     run(Path(tmp) / "calibrated", args.calibration, args))
        report("control: no per-clip offsets", run(Path(tmp) / "control", 0.0, args))
        print(f"\nwall {time.perf_counter() - t0:.0f} s")
    if low is not None:
        verdict = "met" if low > 0 else "missed"
        print(f"- {verdict}: GOAL rl/adaptive above the best static row on the calibrated set "
              f"(interval above 0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
