"""Benchmark: every strategy on real DCASE outputs, equal budgets, seeded 50/50 splits.

For desed-validation/dcase2021-baseline-student, dcase2020-baseline and
dcase2021-baseline-teacher it runs one sedtune job per set with the job's default search space
(both decoders) (5 seeded 50/50 clip splits, budget 200 full-set evaluations per
searching strategy) and prints one table per set: mean and spread of tuning F1 and held-out
F1, the held-out gain over manual with its bootstrap interval, evaluations and wall seconds,
for manual, exact, random, bayes and rl (static table and clip-adaptive, plus its untrained
policy), each with naive selection (best tuning F1) and the default robust selection.

Bars (issue 3): every robust strategy at or above manual on mean held-out F1; rl's trained
clip-adaptive policy at or above its untrained one (``rl/adaptive`` >= ``rl/untrained_adaptive``:
since issue 12 the untrained policy is rl's static table, the robust selection of the exact
sweep it starts from, so training can only add the per-clip changes its gate accepts; issue 3
asked for "above", which held while the untrained policy was a random one); robust exact above
naive exact on held-out F1 on both sets. Goal (recorded either way): robust exact's mean
held-out gain over manual >= +1.8 points on dcase2021-baseline-student and >= +3.1 on
dcase2020-baseline. Reported, not bars (INFO): the clip-adaptive read-out against manual and
against the untrained static table, and ``rl/naive`` against ``rl/untrained`` (since issue 12
two selections, naive and robust, of the same sweep).

Issue 10 (decoders): per set it also prints the recommended parameters' mean held-out F1
beside two references: the change-point event boxes of Ebbers et al. tuned on the same tuning
clips with the authors' grid (18 settings, every threshold, best tuning F1 per class) as the
issue measured it with the authors' implementation (PUBLISHED, fixed figures), and the same
grid search with sedtune's boxes decoder, measured in this run on the same splits (job
``authors-grid``: exact/naive, budget None, boxes only). Bar: the recommendation's mean
held-out F1 >= PUBLISHED on every set. Goal: one point above it.

Issue 12 (rl that earns its place): per set it also prints rl's seconds per split beside
exact's and the paired bootstrap interval (over the same held-out clips of every split) of
``rl/adaptive`` minus the job's best static recommendation. Bars: ``rl/adaptive`` at or above
manual and at or above rl's own static table (``rl/robust``) on every set; ``rl/robust``
within 0.3 points of ``exact/robust``; rl at most 60 s per split. Goal (recorded either way):
``rl/adaptive`` above the best static recommendation on at least two sets.

Run: python tests/benchmarks/bench_strategies.py [--splits 5] [--first-seed 0] [--budget 200]
     [--strategies manual,exact,random,bayes,rl] [--sets student,2020,teacher] [--no-ray]
     [--space JSON]   (a job-spec ``space`` instead of the default, for measuring spaces)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from envs.evaluator import Evaluator
from envs.heldout import ClipCounts, GainInterval, clip_counts, clip_counts_of_events, gain_interval
from envs.importers import import_tsv_folder
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem, fold_counts
from envs.selection import Candidate, select_robust
from envs.split import split_names
from service.strategies.base import StrategyResult
from service.tuning.check import check_job
from service.tuning.outputs import comparison_markdown
from service.tuning.runner import JobResult, Row, run_job
from service.tuning.spec import parse_spec

SETS = {
    "student": "dcase2021-baseline-student",
    "2020": "dcase2020-baseline",
    "teacher": "dcase2021-baseline-teacher",
}
# Issue 3's goals for robust exact over the frames space (gain over manual); kept as INFO.
GOALS = {"dcase2021-baseline-student": 0.018, "dcase2020-baseline": 0.031}
# Issue 10: the authors' method tuned with their grid on the same tuning clips (their code).
# The splits are the jobs' (envs.split.split_names: seeds 0-4 over the clips in name order).
# Run as a black box on these splits, their implementation gives 0.4720 / 0.4461 / 0.4766
# (student / 2020 / teacher), within 0.1 point of these figures; on the splits the jobs drew
# before they went by name (ground-truth row order) it gives 0.4600 / 0.4447 / 0.4668.
PUBLISHED = {
    "dcase2021-baseline-student": 0.4724,
    "dcase2020-baseline": 0.4453,
    "dcase2021-baseline-teacher": 0.4770,
}
AUTHORS_SPACE = {
    "decoders": ["boxes"],
    "boxes": {
        "step_filter_s": [0.32, 0.48, 0.64],
        "merge": [{"abs": 0.15}, {"abs": 0.2}, {"abs": 0.3}, {"rel": 1.5}, {"rel": 2.0}, {"rel": 3.0}],
    },
}


def job_spec(scores: str, base: Path, name: str, args: argparse.Namespace, out: str) -> dict:
    strategies = []
    for s in args.strategies.split(","):
        entry: dict = {"name": s}
        if s != "manual":
            entry["budget"] = args.budget
        strategies.append(entry)
    spec: dict = {
        "name": f"bench-{name}",
        "data": {
            "scores": scores,
            "ground_truth": str(base / "ground_truth.tsv"),
            "durations": str(base / "durations.tsv"),
        },
        "heldout": {"fraction": 0.5, "seed": args.first_seed, "splits": args.splits},
        "strategies": strategies,
        "resources": {"num_cpus": 2},
        "tracking": {"enabled": False},
        "output": out,
    }
    if args.space:
        spec["space"] = json.loads(args.space)
    return spec


def authors_grid_spec(scores: str, base: Path, name: str, args: argparse.Namespace, out: str) -> dict:
    """The authors' grid search with sedtune's boxes decoder: every threshold, best tuning F."""
    return {
        "name": f"authors-grid-{name}",
        "data": {
            "scores": scores,
            "ground_truth": str(base / "ground_truth.tsv"),
            "durations": str(base / "durations.tsv"),
        },
        "heldout": {"fraction": 0.5, "seed": args.first_seed, "splits": args.splits},
        "space": AUTHORS_SPACE,
        "strategies": [
            {"name": "manual"},
            {"name": "exact", "options": {"max_candidates_per_setting": 100000}},
        ],
        "selection": "naive",
        "tracking": {"enabled": False},
        "output": out,
    }


def _row(result: JobResult, strategy: str, selection: str) -> Row | None:
    return next((r for r in result.rows if r.strategy == strategy and r.selection == selection), None)


#: Issue 12: rl's robust static table may trail exact's by at most this (held-out macro F).
RL_STATIC_TOLERANCE = 0.003
#: Issue 12: rl's wall seconds per split at a budget of 200.
RL_SECONDS_PER_SPLIT = 60.0


def _static_params(
    res: StrategyResult, selection: str, manual: dict[str, Candidate]
) -> dict[str, ClassParams]:
    """A static row's parameters on one split, as the runner derived them."""
    if selection == "robust":
        return select_robust(res.candidates, manual)[0]
    if selection in ("naive", "fixed"):
        return dict(res.naive)
    return dict(res.readouts[selection])


def adaptive_vs_best_static(result: JobResult) -> tuple[str, GainInterval] | None:
    """Paired bootstrap interval of rl/adaptive minus the recommended static row, over the splits.

    Rebuilds every split as the runner did (same clips, folds and manual counts) and scores
    both on its held-out clips; the interval is :func:`envs.heldout.gain_interval`'s.
    """
    rec, spec = result.recommended, result.spec
    if "rl" not in result.results or rec.strategy not in result.results:
        return None
    job = check_job(spec)
    pairs: list[tuple[ClipCounts, ClipCounts]] = []
    for k, (mine, theirs) in enumerate(zip(result.results["rl"], result.results[rec.strategy], strict=True)):
        tune_idx, held_idx = split_names(job.data.filenames, spec.heldout.fraction, spec.heldout.seed + k)
        names = tuple(job.data.filenames[i] for i in tune_idx)
        data = spec.data
        ref = DataRef(data.scores, data.ground_truth, data.durations, names, tuple(job.classes))
        problem = TuningProblem(ref, ref.load(), job.space, job.metric, job.manual, spec.folds, spec.seed + k)
        counts = fold_counts(problem.evaluator, job.manual, problem.folds, problem.n_folds)
        manual = {c: Candidate(job.manual[c], counts[c]) for c in job.classes}
        held = Evaluator(job.data.subset(held_idx), job.metric)
        static = clip_counts(held, _static_params(theirs, rec.selection, manual))
        pairs.append((clip_counts_of_events(held, mine.policies["adaptive"].events(held.data)), static))
    return rec.key, gain_interval(pairs, spec.bootstrap, spec.seed)


def rl_report(name: str, result: JobResult) -> list[tuple[str, bool]]:
    """Issue 12: print rl's cost and its adaptive gain over the best static row; its bars."""
    rl, exact = _row(result, "rl", "robust"), _row(result, "exact", "robust")
    adaptive, manual = _row(result, "rl", "adaptive"), _row(result, "manual", "fixed")
    if rl is None or adaptive is None:
        return []
    out = []
    exact_s = f"{exact.wall_s:.1f}" if exact else "n/a"
    print(f"rl: {rl.wall_s:.1f} s per split (exact: {exact_s} s); evaluations {rl.evaluations:.1f}")
    for k, res in enumerate(result.results["rl"]):
        gate = res.info.get("gate") or {}
        timing = " ".join(f"{key} {v:.1f}" for key, v in res.info.get("timing_s", {}).items())
        print(f"  split {k}: {res.info.get('adaptive')}; adapted {gate.get('adapted', [])}; "
              f"seconds: {timing}")
    vs = adaptive_vs_best_static(result)
    if vs is not None:
        key, g = vs
        print(f"rl/adaptive - {key} (best static), held-out: {100 * g.gain:+.2f} points "
              f"(95% CI {100 * g.low:+.2f} to {100 * g.high:+.2f})")
        interval = f"{100 * g.gain:+.2f} points (95% CI {100 * g.low:+.2f} to {100 * g.high:+.2f})"
        out.append((f"{name}: GOAL rl/adaptive above the best static recommendation {key}: {interval}",
                    g.gain > 0))
    if manual is not None:
        out.append((f"{name}: rl/adaptive held-out {adaptive.heldout_f_mean:.4f} >= manual "
                    f"{manual.heldout_f_mean:.4f}", adaptive.heldout_f_mean >= manual.heldout_f_mean))
    out.append((f"{name}: rl/adaptive held-out {adaptive.heldout_f_mean:.4f} >= rl/robust (its static table) "
                f"{rl.heldout_f_mean:.4f}", adaptive.heldout_f_mean >= rl.heldout_f_mean))
    if exact is not None:
        out.append((f"{name}: rl/robust {rl.heldout_f_mean:.4f} within {100 * RL_STATIC_TOLERANCE:.1f} "
                    f"points of exact/robust {exact.heldout_f_mean:.4f}",
                    rl.heldout_f_mean >= exact.heldout_f_mean - RL_STATIC_TOLERANCE))
    if any(s.budget == 200 for s in result.spec.strategies if s.name == "rl"):
        out.append((f"{name}: rl {rl.wall_s:.1f} s per split <= {RL_SECONDS_PER_SPLIT:g}",
                    rl.wall_s <= RL_SECONDS_PER_SPLIT))
    return out


def check_bars(name: str, result: JobResult) -> list[tuple[str, bool]]:
    manual = _row(result, "manual", "fixed")
    assert manual is not None
    out = []
    for r in result.rows:
        if r.selection == "robust":
            out.append((f"{name}: {r.key} held-out >= manual", r.heldout_f_mean >= manual.heldout_f_mean))
    # Issue 3's rl bars compared trained and untrained read-outs. Since issue 12 rl's untrained
    # policy *is* its static table (exact's robust selection of the sweep it runs first) and
    # training can only add per-clip changes that its cross-fitted gate accepts, the bar is
    # that the trained clip-adaptive policy is never below that starting point on held-out
    # clips; on a set where the gate rejects every change the two are equal. That training
    # learns is shown where adaptation is possible (tests/integration/test_rl_adaptive.py,
    # the calibration-offset set). rl/naive against rl/untrained now compares two selections
    # of the same sweep (naive and robust), so it is reported, not a bar.
    rl_static, rl_untrained = _row(result, "rl", "naive"), _row(result, "rl", "untrained")
    if rl_static and rl_untrained:
        out.append(
            (
                f"{name}: INFO rl/naive held-out {rl_static.heldout_f_mean:.4f} vs rl/untrained "
                f"(the robust table) {rl_untrained.heldout_f_mean:.4f}",
                rl_static.heldout_f_mean > rl_untrained.heldout_f_mean,
            )
        )
    rl_ad, rl_ad0 = _row(result, "rl", "adaptive"), _row(result, "rl", "untrained_adaptive")
    if rl_ad and rl_ad0:
        out.append(
            (
                f"{name}: rl/adaptive held-out {rl_ad.heldout_f_mean:.4f} >= rl/untrained_adaptive "
                f"(the table it starts from) {rl_ad0.heldout_f_mean:.4f}",
                rl_ad.heldout_f_mean >= rl_ad0.heldout_f_mean,
            )
        )
    if rl_ad:
        # Reported, not a bar: the clip-adaptive read-out against the fixed references.
        for ref_row in (manual, rl_untrained):
            if ref_row is not None:
                out.append(
                    (
                        f"{name}: INFO rl/adaptive held-out {rl_ad.heldout_f_mean:.4f} vs "
                        f"{ref_row.key} {ref_row.heldout_f_mean:.4f}",
                        rl_ad.heldout_f_mean >= ref_row.heldout_f_mean,
                    )
                )
    if name in PUBLISHED:
        rec = result.recommended
        pub = PUBLISHED[name]
        # PUBLISHED was measured on seeds 0-4: on other splits the comparison is only reported.
        ho = result.spec.heldout
        info = "" if (ho.seed, ho.splits) == (0, 5) else "INFO (other splits) "
        out.append(
            (
                f"{name}: {info}recommendation {rec.key} held-out {rec.heldout_f_mean:.4f} "
                f">= published {pub:.4f}",
                rec.heldout_f_mean >= pub,
            )
        )
        out.append(
            (f"{name}: GOAL recommendation {rec.heldout_f_mean:.4f} >= published + 1 point {pub + 0.01:.4f}",
             rec.heldout_f_mean >= pub + 0.01)
        )
    naive, robust = _row(result, "exact", "naive"), _row(result, "exact", "robust")
    if naive and robust and name in GOALS and result.spec.space.decoders != ["boxes"]:
        out.append(
            (f"{name}: exact/robust held-out > exact/naive", robust.heldout_f_mean > naive.heldout_f_mean)
        )
        goal = GOALS[name]
        out.append(
            (
                f"{name}: INFO exact/robust gain {100 * robust.gain.gain:+.2f} >= +{100 * goal:.1f} points "
                "(issue 3's goal)",
                robust.gain.gain >= goal,
            )
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument(
        "--first-seed", type=int, default=0, help="first split's seed, +1 per split (PUBLISHED: seeds 0-4)"
    )
    ap.add_argument("--budget", type=float, default=200)
    ap.add_argument("--strategies", default="manual,exact,random,bayes,rl")
    ap.add_argument("--sets", default="student,2020,teacher")
    ap.add_argument("--space", default=None, help="a job-spec space (JSON) instead of the default")
    ap.add_argument("--no-reference", action="store_true", help="skip the authors-grid job")
    ap.add_argument("--no-ray", action="store_true", help="in-process (manual and exact only)")
    ap.add_argument("--out", default=None, help="keep the job outputs in this folder")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    args = ap.parse_args()
    shared = Path(args.shared) / "desed-validation"
    bars: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.out or tmp_dir
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for key in args.sets.split(","):
            name = SETS[key]
            scores = f"{tmp}/{name}"
            import_tsv_folder(str(shared / name / "scores"), scores)
            spec = parse_spec(job_spec(scores, shared, name, args, f"{tmp}/out-{name}"), "bench spec")
            t0 = time.perf_counter()
            result = run_job(spec, use_ray=not args.no_ray)
            print(
                f"\n## {name}: {args.splits} splits, budget {args.budget:g}, "
                f"{time.perf_counter() - t0:.0f} s\n"
            )
            print(comparison_markdown(result).split("## Per-class")[0], flush=True)
            rec = result.recommended
            print(
                f"Recommended: {rec.key}, held-out macro F1 "
                f"{rec.heldout_f_mean:.4f} ± {rec.heldout_f_std:.4f}"
            )
            print(f"Published method (authors' code and grid, issue 10): {PUBLISHED[name]:.4f}")
            if not args.no_reference:
                ref_spec = authors_grid_spec(scores, shared, name, args, f"{tmp}/authors-{name}")
                t1 = time.perf_counter()
                ref = run_job(parse_spec(ref_spec, "authors-grid spec"), use_ray=False)
                row = _row(ref, "exact", "naive")
                assert row is not None
                print(
                    "Authors' grid with sedtune's boxes decoder (same splits, every threshold, "
                    f"best tuning F): "
                    f"{row.heldout_f_mean:.4f} ± {row.heldout_f_std:.4f} ({time.perf_counter() - t1:.0f} s)"
                )
            print()
            print("Per-class parameters of the recommendation (first split):\n")
            per_class = comparison_markdown(result).split("## Per-class")[1].splitlines()[1:]
            print("\n".join(per_class), flush=True)
            bars += check_bars(name, result)
            print()
            bars += rl_report(name, result)
    print("\n## Bars and goals\n")
    for text, ok in bars:
        kind = ("met" if ok else "missed") if "GOAL" in text or "INFO" in text else ("PASS" if ok else "FAIL")
        print(f"- {kind}: {text}")
    hard = [ok for text, ok in bars if "GOAL" not in text and "INFO" not in text]
    return 0 if all(hard) else 1


if __name__ == "__main__":
    sys.exit(main())
