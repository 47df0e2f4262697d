"""Random and Bayes (Optuna TPE) search on a local Ray: the strategy contract, warm starts,
budgets, determinism across concurrency, and a worker that dies mid-search."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from envs.errors import SedtuneInputError
from envs.evaluator import MetricConfig
from envs.params import ClassParams, ParamFile
from envs.problem import TuningProblem
from envs.snap import snap_params as snap
from envs.space import SearchSpace
from envs.synth import SynthResult, generate
from envs.synth_config import SynthConfig
from service.strategies.base import RunContext, Strategy, StrategyResult, evaluate_joint, strategy_class
from service.strategies.options import BayesOptions, RandomOptions
from service.strategies.search_codec import ConditionalSpace, decode, encode, param_space
from service.strategies.tune_search import (
    NO_METRIC_FILES,
    TUNE_ANALYSIS_LOGGER,
    TUNE_LOGGERS_ENV,
    BayesStrategy,
    RandomStrategy,
    trial_budget,
)
from tests.contract.strategy_contract import StrategyContract
from tests.integration.problems import decoder_problem, decoder_set, synth_problem

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

SPACE = SearchSpace(kernels=(1, 3, 5, 7), threshold_low=0.05, threshold_high=0.95)
MANUAL = ClassParams(median_filter_frames=7, threshold=0.5)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate(str(tmp_path_factory.mktemp("synth")), SynthConfig(n_clips=60, n_classes=3, seed=0))


@pytest.fixture(scope="module")
def problem(synth_set: SynthResult) -> TuningProblem:
    return synth_problem(synth_set, SPACE, MANUAL)


def _run(
    strategy: Strategy,
    problem: TuningProblem,
    workdir: Path,
    budget: float | None = 12.0,
    seed: int = 0,
    progress: list[float] | None = None,
) -> StrategyResult:
    sink = progress if progress is not None else []
    return strategy.run(problem, budget, seed, RunContext(str(workdir), progress=sink.append))


def _evaluated(result: StrategyResult) -> list[dict[str, ClassParams]]:
    """Every trial's joint configuration, in trial order."""
    classes = list(result.candidates)
    n = len(result.candidates[classes[0]])
    return [{c: result.candidates[c][i].params for c in classes} for i in range(n)]


# --------------------------------------------------------------------------- the contract


# Results of the contract runs, by test class: each Tune run costs seconds, so the contract
# tests share one run per strategy (the determinism test still makes its own second run).
_RESULTS: dict[str, StrategyResult] = {}


class _TuneContract(StrategyContract):
    budget = 12.0
    use_ray = True

    @pytest.fixture
    def result(self, problem, tmp_path_factory) -> StrategyResult:
        key = type(self).__name__
        if key not in _RESULTS:
            _RESULTS[key] = self._run(problem, tmp_path_factory.mktemp(key))
        return _RESULTS[key]

    def test_candidates_cover_every_trial(self, problem, result):
        n = int(result.evaluations)
        assert {k: result.info[k] for k in ("trials", "failed_trials", "retried_trials")} == {
            "trials": n, "failed_trials": 0, "retried_trials": 0,
        }
        assert [d["index"] for d in result.info["trials_detail"]] == list(range(n))
        assert result.info["nodes"]
        for c in problem.classes:
            assert len(result.candidates[c]) == n
            for cand in result.candidates[c]:
                assert problem.space.contains(cand.params)
                assert cand.counts.shape == (problem.n_folds, 3) and cand.counts.dtype == np.int64
        # Counts are the ones a direct evaluation gives, and the naive pick is the best trial.
        f_naive, counts = evaluate_joint(problem, result.naive)
        best = max(range(n), key=lambda i: evaluate_joint(problem, _evaluated(result)[i])[0])
        assert _evaluated(result)[best] == result.naive
        for c in problem.classes:
            assert np.array_equal(result.candidates[c][best].counts, counts[c])
        assert f_naive == pytest.approx(result.trajectory[-1].best_f, abs=1e-12)
        assert result.trajectory[-1].best_f >= result.trajectory[0].best_f
        wall = [p.wall_s for p in result.trajectory]
        assert wall == sorted(wall) and 0 < wall[-1] <= result.wall_s


class TestRandomContract(_TuneContract):
    def make(self) -> Strategy:
        return RandomStrategy(RandomOptions(max_concurrent_trials=2))


class TestBayesContract(_TuneContract):
    def make(self) -> Strategy:
        # Few startup trials so that TPE, not its random start, makes most suggestions.
        return BayesStrategy(BayesOptions(n_startup_trials=4))


# --------------------------------------------------------------------------- runs on Ray


def _random_reference(problem: TuningProblem, workdir: Path) -> StrategyResult:
    """Random search with seed 0, budget 12, two trials at once (TestRandomContract's run)."""
    if "TestRandomContract" not in _RESULTS:
        _RESULTS["TestRandomContract"] = _run(
            RandomStrategy(RandomOptions(max_concurrent_trials=2)), problem, workdir
        )
    return _RESULTS["TestRandomContract"]


def test_random_search_is_the_same_at_any_concurrency(problem, tmp_path):
    two = _random_reference(problem, tmp_path / "two")
    one = _run(RandomStrategy(RandomOptions(max_concurrent_trials=1)), problem, tmp_path / "one")
    assert _evaluated(one) == _evaluated(two)
    assert [p.best_f for p in one.trajectory] == [p.best_f for p in two.trajectory]
    assert one.naive == two.naive
    other_seed = _run(RandomStrategy(RandomOptions()), problem, tmp_path / "s1", budget=3, seed=1)
    assert _evaluated(other_seed) != _evaluated(one)[:3]


def test_a_search_writes_no_per_trial_logs_and_warns_of_none(problem, tmp_path, caplog):
    """Tune's per-trial loggers are off for the search only, and so is their absence's warning."""
    caplog.set_level(logging.INFO)
    os.environ.pop(TUNE_LOGGERS_ENV, None)
    result = _run(RandomStrategy(RandomOptions()), problem, tmp_path, budget=3)
    assert len(_evaluated(result)) == 3
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert not written & {"progress.csv", "result.json"}, written
    assert not any(n.startswith("events.out.tfevents") for n in written), written
    assert TUNE_LOGGERS_ENV not in os.environ
    assert not [r for r in caplog.records if r.getMessage().startswith(NO_METRIC_FILES)]
    # The filter is gone with the search: the same warning from elsewhere is still reported.
    logging.getLogger(TUNE_ANALYSIS_LOGGER).warning("%s 1 trial(s)", NO_METRIC_FILES)
    assert [r for r in caplog.records if r.getMessage().startswith(NO_METRIC_FILES)]


def test_bayes_evaluates_manual_then_warm_start_first(problem, tmp_path):
    # Outside the space (kernels 1-7, thresholds 0.05-0.95): kernel 9 snaps to 7, 0.97 clips to 0.95.
    warm = {c: ClassParams(median_filter_frames=9, threshold=0.97) for c in problem.classes}
    warm[problem.classes[0]] = ClassParams(median_filter_frames=3, threshold=0.3)
    path = tmp_path / "warm.json"
    ParamFile(problem.tuning.frame_hop_s, warm).save(str(path))
    progress: list[float] = []
    res = _run(
        BayesStrategy(BayesOptions(warm_start=str(path), n_startup_trials=2)),
        problem,
        tmp_path / "w",
        budget=5,
        progress=progress,
    )
    assert res.evaluations == 5 and len(res.trajectory) == 5
    first, second = _evaluated(res)[:2]
    assert first == problem.manual
    assert second == {c: snap(p, SPACE) for c, p in warm.items()}
    assert second[problem.classes[1]] == ClassParams(median_filter_frames=7, threshold=0.95)
    manual_f, manual_counts = evaluate_joint(problem, problem.manual)
    assert res.trajectory[0].best_f == pytest.approx(manual_f, abs=1e-12)
    for c in problem.classes:
        assert np.array_equal(res.candidates[c][0].counts, manual_counts[c])
    assert progress == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_budget_below_warm_start_points_keeps_the_first(problem, tmp_path):
    inline = {problem.classes[0]: {"median_filter_frames": 1, "threshold": 0.2}}
    res = _run(BayesStrategy(BayesOptions(warm_start=inline)), problem, tmp_path, budget=1.9)
    assert res.evaluations == 1 and res.info["trials"] == 1
    assert res.naive == problem.manual


def test_a_dying_worker_is_retried_and_changes_nothing(problem, tmp_path):
    marker = tmp_path / "died-once"
    faulty = _run(
        RandomStrategy(RandomOptions(max_concurrent_trials=2, fault_marker=str(marker))),
        problem,
        tmp_path / "faulty",
    )
    assert marker.exists()
    # One death; a trial Tune had already handed to the dying actor may be retried as well.
    assert faulty.info["trials"] == 12 and faulty.info["failed_trials"] == 0
    assert faulty.info["retried_trials"] >= 1
    assert all(len(v) == 12 for v in faulty.candidates.values())
    clean = _random_reference(problem, tmp_path / "clean")
    assert _evaluated(faulty) == _evaluated(clean)
    assert [p.best_f for p in faulty.trajectory] == [p.best_f for p in clean.trajectory]


def test_systematic_trial_failure_stops_the_search(problem, tmp_path):
    # Workers cannot read the data (the driver could): every trial fails the same way.
    broken = replace(problem.data, scores=str(tmp_path / "no-such-scores"))
    bad = TuningProblem(broken, problem.tuning, SPACE, MetricConfig(), problem.manual, n_folds=3, seed=0)
    with pytest.raises(RuntimeError, match=r"none of the \d+ Tune trials produced a result") as e:
        _run(RandomStrategy(RandomOptions(max_concurrent_trials=1, max_failures=0)), bad, tmp_path, budget=50)
    assert "no-such-scores" in str(e.value)


# --------------------------------------------------------------------------- no Tune run


def test_registry_and_lazy_ray_import():
    assert strategy_class("random") is RandomStrategy
    assert strategy_class("bayes") is BayesStrategy
    code = "import sys, service.strategies.tune_search; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_encode_snaps_and_decode_inverts():
    space = SearchSpace(
        kernels=(1, 5, 9), fill_gap_s=(0.0, 0.2), min_duration_s=(0.1,), threshold_low=0.1, threshold_high=0.8
    )
    params = {
        "A": ClassParams(median_filter_frames=7, threshold=0.95, fill_gap_s=0.15, threshold_off=0.3),
        "B/odd label": ClassParams(median_filter_frames=3, threshold=0.02),
    }
    cfg = encode(params, ["A", "B/odd label"], space)
    # Single-valued dimensions are left out; the rest are flat keys by class index.
    assert cfg == {
        "c0000_kernel": 5,
        "c0000_threshold": 0.8,
        "c0000_gap": 0.2,
        "c0001_kernel": 1,
        "c0001_threshold": 0.1,
        "c0001_gap": 0.0,
    }
    back = decode(cfg, ["A", "B/odd label"], space)
    assert back["A"] == ClassParams(median_filter_frames=5, threshold=0.8, fill_gap_s=0.2, min_duration_s=0.1)
    assert all(space.contains(p) for p in back.values())


def test_trial_budget(problem, tmp_path):
    assert trial_budget(None) == 100
    assert trial_budget(12.0) == 12
    assert trial_budget(7.99) == 7
    # The rule (TuneOptions.budget_error) is applied by run itself, before any trial.
    with pytest.raises(SedtuneInputError, match="budget must be >= 1"):
        _run(RandomStrategy(), problem, tmp_path, budget=0.5)


@pytest.mark.parametrize(
    ("cls", "options", "field"),
    [
        (RandomOptions, {"max_concurrent_trials": 0}, "max_concurrent_trials"),
        (RandomOptions, {"warm_start": "x.json"}, "warm_start"),
        (BayesOptions, {"n_startup_trials": -1}, "n_startup_trials"),
        (BayesOptions, {"warm_start": {"Dog": {"threshold": 1.5}}}, "warm_start"),
        (BayesOptions, {"warm_start": {"Dog": {"kernel": 3, "threshold": 0.5}}}, "warm_start"),
        (BayesOptions, {"unknown": 1}, "unknown"),
    ],
)
def test_options_are_validated_with_field_paths(cls: Any, options: dict[str, Any], field: str):
    with pytest.raises(ValidationError) as e:
        cls.model_validate(options)
    assert e.value.errors()[0]["loc"][0] == field


def test_warm_start_naming_unknown_classes_is_refused(problem, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(
        json.dumps(
            {
                "format": "sedtune.params/1",
                "frame_hop_s": problem.tuning.frame_hop_s,
                "classes": {"NotAClass": {"threshold": 0.4}},
            }
        )
    )
    with pytest.raises(SedtuneInputError, match="NotAClass"):
        _run(BayesStrategy(BayesOptions(warm_start=str(path))), problem, tmp_path)
    hop = tmp_path / "hop.json"
    hop.write_text(
        json.dumps(
            {
                "format": "sedtune.params/1",
                "frame_hop_s": 0.02,
                "classes": {problem.classes[0]: {"threshold": 0.4}},
            }
        )
    )
    with pytest.raises(SedtuneInputError, match="frame_hop_s"):
        _run(BayesStrategy(BayesOptions(warm_start=str(hop))), problem, tmp_path)


# --------------------------------------------------------------------------- both decoders

# On the decoder set, Chatter scores F 1 with boxes (box thresholds up to about 0.72) and 0 with
# frames; Train 1 with frames and at most 0.78 with boxes (tests/integration/problems.py).
SPACE2 = SearchSpace(
    kernels=(1, 3, 5),
    threshold_low=0.6,
    threshold_high=0.8,
    decoders=("frames", "boxes"),
    box_step_filter_s=(1.6, 2.4),
    box_merge=((None, 2.0),),
)
# The DCASE baseline at a 0.1 s hop: threshold 0.5, 0.45 s -> 5 frames.
MANUAL2 = ClassParams(median_filter_frames=5, threshold=0.5)


@pytest.fixture(scope="module")
def decoder_prob(tmp_path_factory: pytest.TempPathFactory) -> TuningProblem:
    return decoder_problem(decoder_set(str(tmp_path_factory.mktemp("decoders"))), SPACE2, MANUAL2)


class _TwoDecoderContract(_TuneContract):
    budget = 20.0

    @pytest.fixture
    def problem(self, decoder_prob):
        return decoder_prob

    def test_each_class_gets_the_decoder_that_scores_better(self, problem, result):
        naive = result.naive
        assert naive["Chatter"].decoder == "boxes" and naive["Train"].decoder == "frames", naive
        f, _ = evaluate_joint(problem, naive)
        assert f == pytest.approx(1.0, abs=1e-12)
        for c in problem.classes:
            assert {cand.params.decoder for cand in result.candidates[c]} == {"frames", "boxes"}
        # The saved file holds each class's own decoder fields.
        saved = ParamFile(problem.tuning.frame_hop_s, dict(naive)).to_json()["classes"]
        assert "step_filter_s" in saved["Chatter"] and "threshold_off" not in saved["Chatter"]
        assert "step_filter_s" not in saved["Train"]


class TestRandomTwoDecoders(_TwoDecoderContract):
    def make(self) -> Strategy:
        return RandomStrategy(RandomOptions(max_concurrent_trials=2))


class TestBayesTwoDecoders(_TwoDecoderContract):
    def make(self) -> Strategy:
        return BayesStrategy(BayesOptions(n_startup_trials=4))

    def test_manual_is_the_first_point(self, problem, result):
        assert _evaluated(result)[0] == {c: snap(MANUAL2, SPACE2) for c in problem.classes}
        assert _evaluated(result)[0]["Train"] == ClassParams(median_filter_frames=5, threshold=0.6)


def test_bayes_warm_starts_from_a_file_with_box_classes(decoder_prob, tmp_path):
    warm = {
        # Outside the space: step 1.9 s -> 1.6 s, merge abs -> the rel one (the only one),
        # confidence max -> mean (the only one), threshold 0.7 stays.
        "Chatter": ClassParams(median_filter_frames=1, threshold=0.7, decoder="boxes", step_filter_s=1.9,
                               merge_abs=0.3, confidence="max"),
        "Train": ClassParams(median_filter_frames=3, threshold=0.65),
    }
    path = tmp_path / "warm.json"
    ParamFile(decoder_prob.tuning.frame_hop_s, warm).save(str(path))
    res = _run(BayesStrategy(BayesOptions(warm_start=str(path), n_startup_trials=2)), decoder_prob,
               tmp_path / "w", budget=3)
    assert res.evaluations == 3
    second = _evaluated(res)[1]
    assert second["Chatter"] == ClassParams(median_filter_frames=1, threshold=0.7, decoder="boxes",
                                            step_filter_s=1.6, merge_rel=2.0)
    assert second["Train"] == warm["Train"]
    f, _ = evaluate_joint(decoder_prob, second)
    assert res.trajectory[1].best_f == pytest.approx(f, abs=1e-12) and f == pytest.approx(1.0)


def test_param_space_is_unchanged_for_frames_and_conditional_for_two_decoders():
    from ray.tune.search.sample import Categorical, Float

    one = param_space(SPACE, 2)
    assert list(one) == ["c0000_kernel", "c0000_threshold", "c0001_kernel", "c0001_threshold"]
    assert isinstance(one["c0000_kernel"], Categorical) and one["c0000_kernel"].categories == [1, 3, 5, 7]
    assert isinstance(one["c0000_threshold"], Float)
    assert (one["c0000_threshold"].lower, one["c0000_threshold"].upper) == (0.05, 0.95)
    two = param_space(SPACE2, 1)
    # Single-valued stages (box kernel, merge, confidence) take no dimension.
    assert list(two) == ["c0000_decoder", "c0000_kernel", "c0000_step_filter", "c0000_threshold"]
    assert two["c0000_decoder"].categories == ["frames", "boxes"]
    assert two["c0000_step_filter"].categories == [1.6, 2.4]
    boxes_only = param_space(replace(SPACE2, decoders=("boxes",)), 1)
    assert list(boxes_only) == ["c0000_step_filter", "c0000_threshold"]


def test_conditional_space_suggests_exactly_the_active_dimensions():
    import optuna

    space = replace(SPACE2, box_merge=((None, 2.0), (0.2, None)), box_confidence=("mean", "max"))
    params = {
        "A": ClassParams(median_filter_frames=3, threshold=0.7),
        "B": ClassParams(median_filter_frames=1, threshold=0.65, decoder="boxes", step_filter_s=2.4,
                         merge_abs=0.2, confidence="max"),
    }
    cfg = encode(params, ["A", "B"], space)
    assert cfg == {
        "c0000_decoder": "frames", "c0000_kernel": 3, "c0000_threshold": 0.7,
        "c0001_decoder": "boxes", "c0001_step_filter": 2.4, "c0001_merge": 1, "c0001_confidence": "max",
        "c0001_threshold": 0.65,
    }
    assert decode(cfg, ["A", "B"], space) == params
    # A FixedTrial refuses a dimension it was not given: the define-by-run asks for these only.
    trial = optuna.trial.FixedTrial(cfg)
    ConditionalSpace(space, 2)(trial)
    assert trial.params == cfg
    # Random search draws every dimension; decode ignores the other decoder's.
    full = {**cfg, "c0000_step_filter": 1.6, "c0000_merge": 0, "c0000_confidence": "mean", "c0001_kernel": 5}
    assert decode(full, ["A", "B"], space) == params


def test_snap_moves_a_class_to_the_nearest_setting_of_a_searched_decoder():
    box = ClassParams(median_filter_frames=3, threshold=0.97, decoder="boxes", step_filter_s=2.1,
                      merge_rel=3.0)
    # A frames-only space: the box class becomes frames at its nearest kernel.
    assert snap(box, SPACE) == ClassParams(median_filter_frames=3, threshold=0.95)
    # Both decoders: the box class stays boxes (box kernel 1, the only one; 2.1 s -> 2.4 s).
    assert snap(box, SPACE2) == ClassParams(median_filter_frames=1, threshold=0.8, decoder="boxes",
                                            step_filter_s=2.4, merge_rel=2.0)
    # Boxes only: the manual (frames) setting becomes the smallest step filter, and of the merge
    # criteria one of no merging if the space has it (a frames class never merges).
    boxes_only = replace(SPACE2, decoders=("boxes",), box_merge=((0.2, None), (None, None)))
    assert snap(MANUAL2, boxes_only) == ClassParams(median_filter_frames=1, threshold=0.6, decoder="boxes",
                                                    step_filter_s=1.6)
    for p in (box, MANUAL2):
        for space in (SPACE, SPACE2, boxes_only):
            assert space.contains(snap(p, space))
