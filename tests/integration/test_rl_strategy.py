"""The rl strategy (PPO, RLlib new API stack) on a local Ray: it approaches the known optimum,
keeps to its budget, gives both read-outs, exports a policy that runs without Ray, and its
environment replicas read their own shards."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from envs.action_grid import ActionGrid
from envs.metrics.fscore import class_f_measure
from envs.params import ClassParams, ParamFile, load_params
from envs.problem import TuningProblem
from envs.space import SearchSpace
from envs.stack import apply_stack
from envs.synth import SynthResult, generate
from envs.synth_config import SynthConfig
from service.strategies.base import RunContext, Strategy, StrategyResult, evaluate_joint, strategy_class
from service.strategies.options import RLOptions
from service.strategies.rl import RLStrategy
from service.strategies.rl_policy import AdaptivePolicy
from service.strategies.rl_training import build_algorithm, env_config, env_steps
from tests.contract.strategy_contract import StrategyContract
from tests.integration.problems import decoder_problem, decoder_set, synth_problem

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

LOG = logging.getLogger(__name__)

# 3 kernels x 10 thresholds per class: the brute-force optimum is cheap and exact.
SPACE = SearchSpace(kernels=(1, 5, 11), threshold_low=0.05, threshold_high=0.95, threshold_step=0.1)
MANUAL = ClassParams(median_filter_frames=7, threshold=0.5)
# Fast-learning settings for 80 clips on 2 CPUs (see the report for how they were chosen).
FAST = RLOptions(
    lr=1e-3,
    lambda_=0.5,
    num_env_runners=2,
    num_envs_per_env_runner=8,
    num_cpus_per_env_runner=0.5,
    train_batch_size=2048,
    minibatch_size=512,
    static_top_k=5,
)
BUDGET = 320.0


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    # 4 shards of 20 clips, so replicas read different shards.
    cfg = SynthConfig(n_clips=80, n_classes=3, seed=0, clips_per_shard=20)
    return generate(str(tmp_path_factory.mktemp("synth")), cfg)


@pytest.fixture(scope="module")
def problem(synth_set: SynthResult) -> TuningProblem:
    return synth_problem(synth_set, SPACE, MANUAL)


@pytest.fixture(scope="module")
def optimum(problem: TuningProblem) -> float:
    """The exact optimum on the grid: per class, every (kernel, threshold) (the F is separable)."""
    best = {}
    grid = [ClassParams(median_filter_frames=k, threshold=t) for k in SPACE.kernels
            for t in SPACE.threshold_grid()]
    for c in problem.classes:
        per = [class_f_measure(problem.evaluator.class_counts(c, p)) for p in grid]
        best[c] = grid[int(np.nanargmax(per))]
    f, _ = evaluate_joint(problem, best)
    return f


@pytest.fixture(scope="module")
def trained(problem: TuningProblem, tmp_path_factory: pytest.TempPathFactory) -> StrategyResult:
    ctx = RunContext(str(tmp_path_factory.mktemp("rl-work")))
    return RLStrategy(FAST).run(problem, BUDGET, 0, ctx)


def test_registered_under_rl() -> None:
    assert strategy_class("rl") is RLStrategy


def test_static_table_rises_to_within_2_percent_of_the_optimum(
    trained: StrategyResult, optimum: float
) -> None:
    best = [p.best_f for p in trained.trajectory]
    assert best[0] < 0.98 * optimum, "the untrained policy should not already be at the optimum"
    hit = next((p for p in trained.trajectory if p.best_f >= 0.98 * optimum), None)
    assert hit is not None, f"best {best[-1]:.4f} vs optimum {optimum:.4f}: {best}"
    LOG.warning("rl within 2%% of the optimum %.4f after %.1f evaluations and %.1f s (untrained %.4f)",
                optimum, hit.evaluations, hit.wall_s, best[0])
    assert best[-1] <= optimum + 1e-12
    assert trained.info["untrained_f"] == best[0]


def test_warm_start_untrained_policy_is_the_manual_table_on_the_grid(
    problem: TuningProblem, tmp_path: Path
) -> None:
    opts = FAST.model_copy(update={"prior_logit": 1.0, "max_iterations": 1})
    res = RLStrategy(opts).run(problem, 40.0, 0, RunContext(str(tmp_path)))
    grid = ActionGrid.from_space(SPACE, len(problem.classes))
    prior = grid.params(grid.nearest_action([MANUAL] * len(problem.classes)), problem.classes)
    assert res.readouts["untrained"] == prior
    # ... on every clip: before training, the clip-adaptive read-out scores the same.
    adaptive = {int(i): f for i, f in res.info["adaptive_f"]}
    f_prior, _ = evaluate_joint(problem, prior)
    assert adaptive[0] == pytest.approx(f_prior, abs=1e-12)
    assert res.info["iterations"] == 1 and 1 in adaptive


def test_a_job_restricted_to_some_classes_trains_on_those(synth_set: SynthResult, tmp_path: Path) -> None:
    from envs.evaluator import MetricConfig
    from envs.problem import DataRef

    picked = (synth_set.classes[2], synth_set.classes[0])
    ref = DataRef(synth_set.scores_uri, synth_set.ground_truth_path, synth_set.durations_path, None, picked)
    problem = TuningProblem(ref, ref.load(), SPACE, MetricConfig(), {c: MANUAL for c in picked}, 3, 0)
    opts = FAST.model_copy(update={"max_iterations": 1})
    res = RLStrategy(opts).run(problem, 40.0, 0, RunContext(str(tmp_path)))
    assert res.info["iterations"] == 1
    assert list(res.naive) == list(picked) and res.policies["adaptive"].classes == list(picked)


def test_adaptive_readout_is_its_best_scored_iteration(
    problem: TuningProblem, trained: StrategyResult
) -> None:
    from envs.heldout import clip_counts_of_events, macro_f

    scored = {int(i): f for i, f in trained.info["adaptive_f"]}
    assert 0 in scored and trained.info["iterations"] in scored
    best = trained.info["adaptive_iteration"]
    assert scored[best] == max(scored.values())
    assert scored[best] > scored[0], f"the clip-adaptive policy did not improve on its start: {scored}"
    policy: AdaptivePolicy = trained.policies["adaptive"]
    f = macro_f(clip_counts_of_events(problem.evaluator, policy.events(problem.tuning)))
    assert f == pytest.approx(scored[best], abs=1e-12)
    start: AdaptivePolicy = trained.policies["untrained_adaptive"]
    f0 = macro_f(clip_counts_of_events(problem.evaluator, start.events(problem.tuning)))
    assert f0 == pytest.approx(scored[0], abs=1e-12)


def test_params_are_valid_for_every_class(
    problem: TuningProblem, trained: StrategyResult, tmp_path: Path
) -> None:
    assert set(trained.naive) == set(problem.classes)
    path = str(tmp_path / "params.json")
    ParamFile(problem.tuning.frame_hop_s, dict(trained.naive)).save(path)
    load_params(path).check_classes(problem.classes, "rl result")
    for c, p in trained.naive.items():
        p.validate(c)
        assert SPACE.contains(p), (c, p)
        assert any(cand.params == p for cand in trained.candidates[c])
    untrained = trained.readouts["untrained"]
    assert set(untrained) == set(problem.classes) and all(SPACE.contains(p) for p in untrained.values())


def test_budget_is_respected(trained: StrategyResult) -> None:
    assert 0 < trained.evaluations <= BUDGET
    ev = [p.evaluations for p in trained.trajectory]
    assert all(b > a for a, b in itertools.pairwise(ev))
    assert ev[-1] <= trained.evaluations + 1e-9
    # Env steps are clips: steps / N of the spent evaluations; the read-outs the rest.
    assert trained.evaluations == pytest.approx(
        trained.info["env_steps"] / 80 + trained.info["readout_evaluations"]
    )


def test_naive_is_the_best_static_table(problem: TuningProblem, trained: StrategyResult) -> None:
    f, _ = evaluate_joint(problem, dict(trained.naive))
    assert f == pytest.approx(trained.trajectory[-1].best_f, abs=1e-12)


def test_adaptive_readout_gives_every_class_its_per_clip_events(
    problem: TuningProblem, trained: StrategyResult
) -> None:
    policy: AdaptivePolicy = trained.policies["adaptive"]
    data = problem.tuning
    events = policy.events(data)
    assert set(events) == set(problem.classes)
    actions = policy.actions([data.scores(c) for c in policy.classes])
    per_clip = [policy.grid.params(a, policy.classes) for a in actions]
    for c in problem.classes:
        ev = events[c]
        assert np.all(np.diff(ev.clip) >= 0) and np.all((ev.clip >= 0) & (ev.clip < len(data)))
        for i in range(len(data)):
            one = apply_stack(data.scores(c).take(np.array([i])), per_clip[i][c], data.frame_hop_s,
                              data.durations_s[[i]])
            mine = ev.clip == i
            assert np.array_equal(ev.onset_s[mine], one.onset_s)
            assert np.array_equal(ev.offset_s[mine], one.offset_s)
    # The policy adapts: its per-clip choices are not one static table.
    assert sum(len({p[c] for p in per_clip}) for c in problem.classes) > len(problem.classes)


def test_saved_policy_reloads_without_ray_and_acts_the_same(
    problem: TuningProblem, synth_set: SynthResult, trained: StrategyResult
) -> None:
    path = trained.artifacts["policy"]
    assert Path(path).is_file() and Path(path).with_suffix(".json").is_file()
    code = f"""
import json, sys
from envs.problem import DataRef
from service.strategies.rl_policy import AdaptivePolicy
policy = AdaptivePolicy.load({path!r})
ref = DataRef({synth_set.scores_uri!r}, {synth_set.ground_truth_path!r}, {synth_set.durations_path!r})
data = ref.load()
actions = policy.actions([data.scores(c) for c in policy.classes])
assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules), "ray was imported"
print(json.dumps(actions.tolist()))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    reloaded = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    data = problem.tuning
    policy = trained.policies["adaptive"]
    expected = policy.actions([data.scores(c) for c in policy.classes])
    assert np.array_equal(reloaded, expected)
    # Kernels are in frames: the policy refuses scores with another hop.
    policy = AdaptivePolicy.load(path)
    assert policy.frame_hop_s == data.frame_hop_s
    with pytest.raises(ValueError, match="frame_hop_s"):
        policy.events_from_scores({c: data.scores(c) for c in policy.classes}, 0.02, None)


def _replica_clips(algo: Any) -> list[tuple[int, int, list[list[str]]]]:
    """(worker index, pid, sorted clip names of each replica) of every remote EnvRunner."""

    def clips(er: Any) -> tuple[int, int, list[list[str]]]:
        names = [sorted(e.unwrapped.data.filenames) for e in er.env.unwrapped.envs]
        return er.worker_index, os.getpid(), names

    return algo.env_runner_group.foreach_env_runner(clips, local_env_runner=False)  # type: ignore[no-any-return]


def test_replicas_read_their_own_shards_also_after_a_runner_dies(problem: TuningProblem) -> None:
    opts = RLOptions(num_env_runners=2, num_envs_per_env_runner=2, train_batch_size=256, minibatch_size=128,
                     num_epochs=1)
    cfg = env_config(problem, opts, 157)
    assert cfg["shards"] == [0, 1, 2, 3] and "scores" in cfg
    assert all(isinstance(v, str | int | float | list | dict | None) for v in cfg.values())
    algo = build_algorithm(problem, opts, 0, 157, ActionGrid.from_space(SPACE, len(problem.classes)))
    try:
        before = sorted(_replica_clips(algo))
        replicas = [set(clips) for _, _, runner in before for clips in runner]
        assert len(replicas) == 4
        assert all(a.isdisjoint(b) for i, a in enumerate(replicas) for b in replicas[i + 1 :])
        assert set().union(*replicas) == set(problem.tuning.filenames)
        steps = env_steps(algo.train())
        os.kill(before[0][1], signal.SIGKILL)  # an EnvRunner this test started
        for _ in range(8):
            now = env_steps(algo.train())
            assert now > steps
            steps = now
            if algo.env_runner_group.num_healthy_remote_workers() == 2:
                break
        after = sorted(_replica_clips(algo))
    finally:
        algo.stop()
    assert after[0][1] != before[0][1], "the killed EnvRunner was not replaced"
    assert [(w, c) for w, _, c in after] == [(w, c) for w, _, c in before]


_CONTRACT_RESULTS: dict[str, StrategyResult] = {}


class TestRLContract(StrategyContract):
    """The shared strategy contract, on a short run (the result is computed once)."""

    budget = 20.0
    use_ray = True

    def make(self) -> Strategy:
        opts = RLOptions(num_env_runners=1, num_envs_per_env_runner=4, train_batch_size=256,
                         minibatch_size=128, num_epochs=4)
        return RLStrategy(opts)

    @pytest.fixture
    def result(self, problem: TuningProblem, tmp_path: Path) -> StrategyResult:
        if "r" not in _CONTRACT_RESULTS:
            _CONTRACT_RESULTS["r"] = self._run(problem, tmp_path)
        return _CONTRACT_RESULTS["r"]


def test_apply_with_the_policy_equals_the_adaptive_readout(
    synth_set: SynthResult, problem: TuningProblem, trained: StrategyResult, tmp_path: Any, capsys: Any
) -> None:
    """`sedtune apply --policy` decodes each clip with its own action, like the read-out."""
    import csv

    from service.cli import main

    out = tmp_path / "events.tsv"
    code = main(["apply", "--scores", synth_set.scores_uri, "--policy", trained.artifacts["policy"],
                 "--durations", synth_set.durations_path, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with open(out, encoding="utf-8") as f:
        rows = sorted((r["filename"], r["event_label"], float(r["onset"]), float(r["offset"]))
                      for r in csv.DictReader(f, delimiter="\t"))
    expected = []
    events = trained.policies["adaptive"].events(problem.tuning)
    for label, ev in events.items():
        expected += [(problem.tuning.filenames[int(c)], label, float(a), float(b))
                     for c, a, b in zip(ev.clip, ev.onset_s, ev.offset_s, strict=True)]
    assert rows == sorted(expected)
    assert main(["apply", "--scores", synth_set.scores_uri, "--policy", str(tmp_path / "nope.pt"),
                 "--out", str(out)]) == 2


# --------------------------------------------------------------------------- both decoders

# Chatter needs boxes (box thresholds up to about 0.72), Train frames (tests/integration/problems.py).
SPACE2 = SearchSpace(
    kernels=(1, 3, 5),
    threshold_low=0.6,
    threshold_high=0.8,
    threshold_step=0.05,
    decoders=("frames", "boxes"),
    box_step_filter_s=(1.6, 2.4),
    box_merge=((None, 2.0),),
)
MANUAL2 = ClassParams(median_filter_frames=5, threshold=0.5)
BUDGET2 = 40.0


@pytest.fixture(scope="module")
def decoder_prob(tmp_path_factory: pytest.TempPathFactory) -> TuningProblem:
    return decoder_problem(decoder_set(str(tmp_path_factory.mktemp("decoders"))), SPACE2, MANUAL2)


@pytest.fixture(scope="module")
def trained2(decoder_prob: TuningProblem, tmp_path_factory: pytest.TempPathFactory) -> StrategyResult:
    opts = RLOptions(num_env_runners=1, num_envs_per_env_runner=4, train_batch_size=256, minibatch_size=128,
                     num_epochs=4, episode_clips=10, adaptive_every=2)
    return RLStrategy(opts).run(decoder_prob, BUDGET2, 0, RunContext(str(tmp_path_factory.mktemp("rl2"))))


def test_two_decoder_run_gives_valid_readouts_within_budget(
    decoder_prob: TuningProblem, trained2: StrategyResult, tmp_path: Path
) -> None:
    assert 0 < trained2.evaluations <= BUDGET2 and trained2.info["iterations"] >= 1
    for table in (trained2.naive, trained2.readouts["untrained"]):
        path = str(tmp_path / "params.json")
        ParamFile(decoder_prob.tuning.frame_hop_s, dict(table)).save(path)
        loaded = load_params(path)
        loaded.check_classes(decoder_prob.classes, "rl result")
        assert loaded.classes == dict(table)
        assert all(SPACE2.contains(p) for p in table.values()), table
    f, _ = evaluate_joint(decoder_prob, dict(trained2.naive))
    assert f == pytest.approx(trained2.trajectory[-1].best_f, abs=1e-12)
    # Each class gets the decoder that scores better: the grid's optimum, F 1.
    assert trained2.naive["Chatter"].decoder == "boxes" and trained2.naive["Train"].decoder == "frames"
    assert f == pytest.approx(1.0, abs=1e-12)
    # The read-outs evaluated settings of both decoders, each with the evaluator's counts.
    cands = [cand for c in decoder_prob.classes for cand in trained2.candidates[c]]
    assert {cand.params.decoder for cand in cands} == {"frames", "boxes"}
    for c in decoder_prob.classes:
        for cand in trained2.candidates[c]:
            n = decoder_prob.evaluator.class_counts_by_group(c, cand.params, decoder_prob.folds, 3)
            assert np.array_equal(cand.counts, n)
    policy: AdaptivePolicy = trained2.policies["adaptive"]
    assert policy.grid == ActionGrid.from_space(SPACE2, 2)


def test_two_decoder_policy_saves_its_grid_and_applies_box_settings(
    decoder_prob: TuningProblem, trained2: StrategyResult, tmp_path: Any, capsys: Any
) -> None:
    import csv

    from service.cli import main

    path = trained2.artifacts["policy"]
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    assert meta["format"] == "sedtune.rl_policy/2" and len(meta["boxes"]) == 2
    loaded = AdaptivePolicy.load(path)
    policy = trained2.policies["adaptive"]
    assert loaded.grid == policy.grid
    data = decoder_prob.tuning
    actions = loaded.actions([data.scores(c) for c in loaded.classes])
    assert np.array_equal(actions, policy.actions([data.scores(c) for c in loaded.classes]))
    settings = loaded.grid.settings()
    picked = {settings[int(s)].decoder for s in loaded.grid.split(actions)[0].ravel()}
    assert "boxes" in picked, "the policy should pick box settings on some clips"
    out = tmp_path / "events.tsv"
    code = main(["apply", "--scores", decoder_prob.data.scores, "--policy", path,
                 "--durations", str(decoder_prob.data.durations), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with open(out, encoding="utf-8") as f:
        rows = sorted((r["filename"], r["event_label"], float(r["onset"]), float(r["offset"]))
                      for r in csv.DictReader(f, delimiter="\t"))
    expected = []
    for label, ev in policy.events(data).items():
        expected += [(data.filenames[int(c)], label, float(a), float(b))
                     for c, a, b in zip(ev.clip, ev.onset_s, ev.offset_s, strict=True)]
    assert rows == sorted(expected)


def test_a_version_1_policy_description_still_loads(trained: StrategyResult, tmp_path: Path) -> None:
    import shutil

    src = Path(trained.artifacts["policy"])
    dst = tmp_path / "old.pt"
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    old = {k: v for k, v in meta.items() if k != "boxes"} | {"format": "sedtune.rl_policy/1"}
    dst.with_suffix(".json").write_text(json.dumps(old))
    grid = trained.policies["adaptive"].grid
    assert AdaptivePolicy.load(str(dst)).grid == grid == ActionGrid.from_space(SPACE, 3)
    dst.with_suffix(".json").write_text(json.dumps({**old, "format": "sedtune.rl_policy/9"}))
    with pytest.raises(ValueError, match="format"):
        AdaptivePolicy.load(str(dst))
