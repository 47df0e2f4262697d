"""The clip-adaptive policy earns its place where clips differ visibly (issue 12).

A generated set whose clips each carry their own calibration offset (``SynthConfig.
clip_calibration_std_logit``: every class's logits shifted by one per-clip amount, visible in
the clip's silent frames) has no single best threshold: each clip's best one moves with its
offset. A job with manual, exact and rl (one 50/50 split) must show ``rl/adaptive`` above every
static row on the held-out clips, with a paired bootstrap interval above 0; on the same
generator without the offsets the gate keeps (nearly) the table, and the gain is small. The
saved policy, applied without Ray by ``sedtune apply --policy`` and by the Python API, gives
events that sed_eval scores exactly as the job reported.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.evaluator import Evaluator
from envs.events import ClassEvents
from envs.heldout import clip_counts, clip_counts_of_events, gain_interval
from envs.metrics.sed_eval_oracle import MACRO_KEY, sed_eval_event_counts
from envs.problem import DataRef, TuningProblem, fold_counts
from envs.selection import Candidate, select_robust
from envs.split import split_names
from envs.synth import SynthResult, generate
from envs.synth_config import SynthConfig
from service.strategies.rl_policy import AdaptivePolicy
from service.tuning.check import check_job
from service.tuning.runner import JobResult, Row, run_job
from service.tuning.spec import JobSpec, parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

LOG = logging.getLogger(__name__)

#: Clean events, so that the threshold is what matters; 4 classes, 400 clips of 10 s.
CLEAN = {
    "n_clips": 400, "n_classes": 4, "seed": 1, "clips_per_shard": 100, "noise_std_logit": 0.3,
    "fp_bursts_per_event": 0.1, "clip_offset_std_logit": 0.1, "event_strength_std": 0.1,
    "onset_lag_range_s": (0.0, 0.0), "offset_lag_range_s": (0.0, 0.0), "lag_jitter_s": 0.02,
    "confusion_fraction_range": (0.0, 0.05),
}
#: Per-clip calibration offsets of this std (logit units) on the adaptive set.
CALIBRATION_SD = 1.5
#: Held-out macro F the adaptive policy must gain over the best static row (0-1 scale).
CLEAR_MARGIN = 0.01
BUDGET = 100.0


def _job(root: Path, synth: SynthResult) -> JobSpec:
    spec = {
        "name": f"adaptive-{root.name}",
        "data": {"scores": synth.scores_uri, "ground_truth": synth.ground_truth_path,
                 "durations": synth.durations_path},
        "heldout": {"fraction": 0.5, "seed": 0, "splits": 1},
        "space": {"decoders": ["frames"], "kernels": [1, 5], "threshold": {"low": 0.02, "high": 0.98}},
        "manual": {"threshold": 0.5, "median_filter_s": 0.32},
        "strategies": [
            {"name": "manual"},
            {"name": "exact", "budget": BUDGET},
            # Half the budget sweeps the static table, half trains the residual policy.
            {"name": "rl", "budget": BUDGET, "options": {"static_share": 0.5}},
        ],
        "tracking": {"enabled": False},
        "output": str(root / "out"),
    }
    return parse_spec(spec, "test spec")


def _run(root: Path, calibration_sd: float) -> tuple[SynthResult, JobResult]:
    synth = generate(str(root / "data"), SynthConfig(**CLEAN, clip_calibration_std_logit=calibration_sd))
    return synth, run_job(_job(root, synth))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthResult, JobResult]:
    return _run(tmp_path_factory.mktemp("calibrated"), CALIBRATION_SD)


@pytest.fixture(scope="module")
def uncalibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthResult, JobResult]:
    return _run(tmp_path_factory.mktemp("uncalibrated"), 0.0)


def _row(result: JobResult, key: str) -> Row:
    return next(r for r in result.rows if r.key == key)


def _static_rows(result: JobResult) -> list[Row]:
    return [r for r in result.rows if r.params is not None]


def _held_out(result: JobResult) -> Evaluator:
    """The held-out clips of the job's split 0, as the runner drew them."""
    job = check_job(result.spec)
    _, held = split_names(job.data.filenames, result.spec.heldout.fraction, result.spec.heldout.seed)
    return Evaluator(job.data.subset(held), job.metric)


def test_adaptive_beats_every_static_row_on_held_out_clips(calibrated: tuple[SynthResult, JobResult]) -> None:
    _, result = calibrated
    adaptive = _row(result, "rl/adaptive")
    best = max(_static_rows(result), key=lambda r: r.heldout_f_mean)
    assert adaptive.heldout_f_mean >= best.heldout_f_mean + CLEAR_MARGIN, (adaptive.heldout_f_mean, best.key,
                                                                          best.heldout_f_mean)
    # The untrained policy is the table, clip by clip.
    assert _row(result, "rl/untrained_adaptive").heldout_f_mean == pytest.approx(
        _row(result, "rl/untrained").heldout_f_mean, abs=1e-12)
    # rl's static table is exact's robust selection of its own sweep.
    assert _row(result, "rl/untrained").params == _row(result, "rl/robust").params
    info = result.results["rl"][0].info
    assert info["gate"]["adapted"], info


def test_the_gain_over_exact_robust_has_a_paired_bootstrap_interval_above_zero(
    calibrated: tuple[SynthResult, JobResult]
) -> None:
    _, result = calibrated
    held = _held_out(result)
    exact = result.results["exact"][0]
    job = check_job(result.spec)
    rl = result.results["rl"][0]
    policy = rl.policies["adaptive"]
    mine = clip_counts_of_events(held, policy.events(held.data))
    # exact/robust as the runner selected it (its manual candidates from the tuning folds).
    tune, _ = split_names(job.data.filenames, 0.5, 0)
    names = tuple(job.data.filenames[i] for i in tune)
    d = result.spec.data
    ref = DataRef(d.scores, d.ground_truth, d.durations, names, tuple(job.classes))
    spec = result.spec
    problem = TuningProblem(ref, ref.load(), job.space, job.metric, job.manual, spec.folds, spec.seed)
    counts = fold_counts(problem.evaluator, job.manual, problem.folds, problem.n_folds)
    robust, _ = select_robust(exact.candidates, {c: Candidate(job.manual[c], counts[c]) for c in job.classes})
    assert robust == _row(result, "exact/robust").params
    g = gain_interval([(mine, clip_counts(held, robust))], 1000, 0)
    LOG.warning("rl/adaptive - exact/robust on held-out clips: %+.2f points (95%% CI %+.2f to %+.2f)",
                100 * g.gain, 100 * g.low, 100 * g.high)
    assert g.low > 0, g
    assert g.gain == pytest.approx(_row(result, "rl/adaptive").heldout_f_mean
                                   - _row(result, "exact/robust").heldout_f_mean, abs=1e-12)


def test_without_per_clip_offsets_adaptation_gains_little(
    calibrated: tuple[SynthResult, JobResult], uncalibrated: tuple[SynthResult, JobResult]
) -> None:
    def gain(result: JobResult) -> float:
        best = max(r.heldout_f_mean for r in _static_rows(result))
        return _row(result, "rl/adaptive").heldout_f_mean - best

    LOG.warning("rl/adaptive - best static row: %+.2f points with per-clip offsets, %+.2f without",
                100 * gain(calibrated[1]), 100 * gain(uncalibrated[1]))
    assert gain(uncalibrated[1]) < CLEAR_MARGIN <= gain(calibrated[1])
    # The gate adapts fewer classes where the clips do not differ.
    adapted = [len(r.results["rl"][0].info["gate"]["adapted"]) for r in (uncalibrated[1], calibrated[1])]
    assert adapted[0] < adapted[1], adapted


def _sed_eval_macro(held: Evaluator, events: dict[str, ClassEvents]) -> float:
    data = held.data
    m = held.metric
    _, f = sed_eval_event_counts(data.filenames, data.classes, data.refs, events, m.t_collar_s,
                                 m.percentage_of_length)
    return f[MACRO_KEY]


def test_the_saved_policy_scores_under_sed_eval_as_the_job_reported(
    calibrated: tuple[SynthResult, JobResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    synth, result = calibrated
    reported = _row(result, "rl/adaptive").heldout_f_mean
    path = result.results["rl"][0].artifacts["policy"]
    held = _held_out(result)
    names = {n: i for i, n in enumerate(held.data.filenames)}
    # 1. sedtune apply --policy on the whole set; the held-out clips' events.
    out = tmp_path / "events.tsv"
    assert main(["apply", "--scores", synth.scores_uri, "--policy", path, "--durations",
                 synth.durations_path, "--out", str(out)]) == 0, capsys.readouterr().err
    rows: dict[str, list[tuple[int, float, float]]] = {c: [] for c in held.data.classes}
    with open(out, encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if r["filename"] in names:
                rows[r["event_label"]].append((names[r["filename"]], float(r["onset"]), float(r["offset"])))
    cli = {c: ClassEvents.from_lists(*zip(*v, strict=True)) if v else ClassEvents.empty()
           for c, v in rows.items()}
    assert _sed_eval_macro(held, cli) == pytest.approx(reported, abs=1e-9)
    # 2. The Python API, in a process without Ray.
    code = f"""
import json, sys
import numpy as np
from envs.problem import DataRef
from service.strategies.rl_policy import AdaptivePolicy
policy = AdaptivePolicy.load({path!r})
data = DataRef({synth.scores_uri!r}, {synth.ground_truth_path!r}, {synth.durations_path!r},
               clips=tuple({list(held.data.filenames)!r})).load()
events = policy.events(data)
assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules), "ray was imported"
print(json.dumps({{c: [e.clip.tolist(), e.onset_s.tolist(), e.offset_s.tolist()]
                  for c, e in events.items()}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=300)
    api = {c: ClassEvents(np.array(v[0], np.int64), np.array(v[1]), np.array(v[2]))
           for c, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    assert _sed_eval_macro(held, api) == pytest.approx(reported, abs=1e-9)
    for c in held.data.classes:
        assert np.array_equal(api[c].onset_s, cli[c].onset_s) and np.array_equal(api[c].clip, cli[c].clip)
    # The reloaded policy is the job's.
    loaded = AdaptivePolicy.load(path)
    assert loaded.adapt == result.results["rl"][0].policies["adaptive"].adapt
