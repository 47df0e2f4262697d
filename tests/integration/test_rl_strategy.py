"""The rl strategy (a static table by an exact sweep, then a cross-fitted residual PPO policy on
RLlib's new API stack) on a local Ray: its static part is exact's, it keeps to its budget, it
learns, its gate decides per class from held-out networks, it exports a policy that runs
without Ray, and its environment replicas read their own shards."""

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
import torch

from envs.action_grid import ResidualGrid
from envs.heldout import clip_counts, clip_counts_of_events, macro_f
from envs.metrics.fscore import f_measure
from envs.params import ClassParams, ParamFile, load_params
from envs.problem import TuningProblem
from envs.selection import Candidate, select_robust
from envs.space import SearchSpace, Setting
from envs.stack import apply_stack
from envs.synth import SynthResult, generate
from envs.synth_config import SynthConfig
from service.strategies.base import RunContext, Strategy, StrategyResult, evaluate_joint, strategy_class
from service.strategies.exact import ExactStrategy
from service.strategies.options import RLOptions
from service.strategies.rl import RLStrategy
from service.strategies.rl_policy import AdaptivePolicy
from service.strategies.rl_training import build_algorithm, env_config, env_steps
from tests.contract.strategy_contract import StrategyContract
from tests.integration.problems import decoder_problem, decoder_set, synth_problem

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

LOG = logging.getLogger(__name__)

# 3 kernels x 10 thresholds per class.
SPACE = SearchSpace(kernels=(1, 5, 11), threshold_low=0.05, threshold_high=0.95, threshold_step=0.1)
MANUAL = ClassParams(median_filter_frames=7, threshold=0.5)
# Half the budget for the sweep (5 thresholds per setting), half for the policy; small batches
# and minibatches, so that the few steps of 80 clips make several iterations of updates.
FAST = RLOptions(static_share=0.5, train_batch_size=1024, minibatch_size=128)
BUDGET = 30.0
N_CLIPS, N_CLASSES = 80, 3


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    # 4 shards of 20 clips, so replicas read different shards.
    cfg = SynthConfig(n_clips=N_CLIPS, n_classes=N_CLASSES, seed=0, clips_per_shard=20)
    return generate(str(tmp_path_factory.mktemp("synth")), cfg)


@pytest.fixture(scope="module")
def problem(synth_set: SynthResult) -> TuningProblem:
    return synth_problem(synth_set, SPACE, MANUAL)


@pytest.fixture(scope="module")
def trained(problem: TuningProblem, tmp_path_factory: pytest.TempPathFactory) -> StrategyResult:
    ctx = RunContext(str(tmp_path_factory.mktemp("rl-work")))
    return RLStrategy(FAST).run(problem, BUDGET, 0, ctx)


def test_registered_under_rl() -> None:
    assert strategy_class("rl") is RLStrategy


def test_static_part_is_exacts_sweep_and_its_robust_selection(
    problem: TuningProblem, trained: StrategyResult, tmp_path: Path
) -> None:
    exact = ExactStrategy().run(problem, 15, 0, RunContext(str(tmp_path), use_ray=False))
    assert trained.info["static"] == "exact sweep, 5 thresholds per setting"
    assert trained.naive == exact.naive
    assert {c: [(x.params, x.counts.tolist()) for x in v] for c, v in trained.candidates.items()} == {
        c: [(x.params, x.counts.tolist()) for x in v] for c, v in exact.candidates.items()}
    # The table is the runner's robust selection (manual counts do not change it).
    zeros = {c: Candidate(MANUAL, np.zeros((3, 3), np.int64)) for c in problem.classes}
    assert trained.readouts["untrained"] == select_robust(exact.candidates, zeros)[0]
    assert trained.policies["adaptive"].grid.table == tuple(trained.readouts["untrained"].values())


def test_a_seed_gives_the_same_training(
    problem: TuningProblem, trained: StrategyResult, tmp_path: Path
) -> None:
    # A second run with the same seed trains the same weights and makes the same choices
    # (RLlib seeds the generators and the replicas from the job's seed).
    again = RLStrategy(FAST).run(problem, BUDGET, 0, RunContext(str(tmp_path)))
    first, second = trained.policies["adaptive"], again.policies["adaptive"]
    for a, b in zip(first.nets, second.nets, strict=True):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
    assert again.info["env_steps"] == trained.info["env_steps"]
    assert again.readouts == trained.readouts and again.info["gate"] == trained.info["gate"]


def test_budget_is_respected_and_accounted(problem: TuningProblem, trained: StrategyResult) -> None:
    info = trained.info
    assert 0 < trained.evaluations <= BUDGET + 1e-9
    # Sweep, env steps at 1 / (clips x classes) each, and the gate's one evaluation.
    assert info["static_evaluations"] == 15
    assert trained.evaluations == pytest.approx(15 + info["env_steps"] / (N_CLIPS * N_CLASSES) + 1)
    assert info["env_steps"] > 0.9 * (BUDGET - 16) * N_CLIPS * N_CLASSES and info["iterations"] >= 2
    ev = [p.evaluations for p in trained.trajectory]
    assert all(b > a for a, b in itertools.pairwise(ev)) and ev[-1] <= trained.evaluations
    assert set(info["timing_s"]) >= {"static_s", "build_s", "train_s", "sample_s", "learn_s", "gate_s"}


def test_the_untrained_policy_is_the_table_and_training_changes_it(
    problem: TuningProblem, trained: StrategyResult
) -> None:
    data = problem.tuning
    untrained: AdaptivePolicy = trained.policies["untrained_adaptive"]
    scores = [data.scores(c) for c in untrained.classes]
    grid = untrained.grid
    assert np.all(untrained.actions(scores, data.frame_hop_s) == grid.base_action)
    table = trained.readouts["untrained"]
    f_table, _ = evaluate_joint(problem, table)
    assert macro_f(clip_counts_of_events(problem.evaluator, untrained.events(data))) == pytest.approx(f_table)
    # Trained, ungated, the networks fit their clips: above the table on the tuning clips.
    policy = _ungated(trained.policies["adaptive"])
    acts = policy.actions(scores, data.frame_hop_s)
    assert (acts != grid.base_action).any()
    f_trained = macro_f(clip_counts_of_events(problem.evaluator, policy.events(data)))
    LOG.warning("rl tuning F: table %.4f, trained ungated %.4f", f_table, f_trained)
    assert f_trained > f_table


def _ungated(policy: AdaptivePolicy) -> AdaptivePolicy:
    import copy

    out = copy.deepcopy(policy)
    out.adapt = [True] * len(out.classes)
    return out


def test_gate_keeps_adaptation_only_where_held_out_networks_win_in_the_bootstrap(
    problem: TuningProblem, trained: StrategyResult
) -> None:
    from envs.metrics.fscore import f_measure

    gate = trained.info["gate"]
    policy: AdaptivePolicy = trained.policies["adaptive"]
    assert policy.adapt == [gate["adapt"][c] for c in problem.classes]
    # Recompute the cross-validated gains: clip i decided by network fold(i) mod nets.
    data = problem.tuning
    holdout = problem.folds % len(policy.nets)
    scores = [data.scores(c) for c in policy.classes]
    acts = policy.crossfit_actions(scores, data.frame_hop_s, holdout)
    events = policy.events_from_scores(dict(zip(policy.classes, scores, strict=True)), data.frame_hop_s,
                                       data.durations_s, acts)
    mine = clip_counts_of_events(problem.evaluator, events)
    table = clip_counts(problem.evaluator, trained.readouts["untrained"])
    assert gate["whole_gain"] == pytest.approx(macro_f(mine) - macro_f(table), abs=1e-12)
    whole = gate["whole_gain"] > 0 and gate["p_whole"] >= FAST.gate_confidence
    for c in problem.classes:
        gain = f_measure(*mine[c].sum(axis=0)) - f_measure(*table[c].sum(axis=0))
        assert gate["gain"][c] == pytest.approx(float(np.nan_to_num(gain)), abs=1e-12)
        assert 0 <= gate["p_gain"][c] <= 1
        # The whole policy wins in the bootstrap, or the class does (Bonferroni).
        alone = gate["gain"][c] > 0 and gate["p_gain"][c] >= 1 - (1 - FAST.gate_confidence) / N_CLASSES
        assert gate["adapt"][c] == (gate["gain"][c] > 0 and (whole or alone))
    # Classes that do not adapt take the table on every clip.
    final = policy.actions(scores, data.frame_hop_s)
    for j in range(len(policy.classes)):
        if not policy.adapt[j]:
            assert np.all(final[:, j] == policy.grid.base_action)


def test_crossfit_actions_use_the_held_out_network() -> None:
    import torch

    grid = ResidualGrid(((MANUAL,),), 0.5, 1)
    policy = AdaptivePolicy.create(grid, ["Dog"], 2, (), 0.5)
    # Network 1 prefers action 0 everywhere, network 0 keeps the table (action 1).
    with torch.no_grad():
        policy.nets[1].mlp[-1].bias[0] = 5.0
    from envs.scoreset import ClassScores

    scores = [ClassScores("Dog", np.full(40, 0.4, np.float32), np.arange(0, 41, 10, dtype=np.int64))]
    holdout = np.array([0, 1, 1, 0])
    assert policy.crossfit_actions(scores, 0.1, holdout)[:, 0].tolist() == [1, 0, 0, 1]
    # Applied to new clips: the mean of the networks' logits (here 2.75 for action 0).
    assert policy.actions(scores, 0.1)[:, 0].tolist() == [0, 0, 0, 0]


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


def test_adaptive_readout_gives_every_class_its_per_clip_events(
    problem: TuningProblem, trained: StrategyResult
) -> None:
    policy = _ungated(trained.policies["adaptive"])
    data = problem.tuning
    events = policy.events(data)
    assert set(events) == set(problem.classes)
    actions = policy.actions([data.scores(c) for c in policy.classes], data.frame_hop_s)
    for j, c in enumerate(problem.classes):
        ev = events[c]
        assert np.all(np.diff(ev.clip) >= 0) and np.all((ev.clip >= 0) & (ev.clip < len(data)))
        for i in range(len(data)):
            one = apply_stack(data.scores(c).take(np.array([i])), policy.grid.params(j, int(actions[i, j])),
                              data.frame_hop_s, data.durations_s[[i]])
            mine = ev.clip == i
            assert np.array_equal(ev.onset_s[mine], one.onset_s)
            assert np.array_equal(ev.offset_s[mine], one.offset_s)
    # The policy adapts: its per-clip choices are not one static table.
    assert any(len(set(actions[:, j])) > 1 for j in range(len(problem.classes)))


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
actions = policy.actions([data.scores(c) for c in policy.classes], data.frame_hop_s)
assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules), "ray was imported"
print(json.dumps(actions.tolist()))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    reloaded = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    data = problem.tuning
    policy: AdaptivePolicy = trained.policies["adaptive"]
    expected = policy.actions([data.scores(c) for c in policy.classes], data.frame_hop_s)
    assert np.array_equal(reloaded, expected)
    loaded = AdaptivePolicy.load(path)
    assert loaded.grid == policy.grid and loaded.adapt == policy.adapt
    # Kernels are in frames: the policy refuses scores with another hop.
    assert loaded.frame_hop_s == data.frame_hop_s
    with pytest.raises(ValueError, match="frame_hop_s"):
        loaded.events_from_scores({c: data.scores(c) for c in loaded.classes}, 0.02, None)


def test_a_policy_of_an_earlier_format_is_refused_plainly(trained: StrategyResult, tmp_path: Path) -> None:
    import shutil

    src = Path(trained.artifacts["policy"])
    dst = tmp_path / "old.pt"
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    dst.with_suffix(".json").write_text(json.dumps({**meta, "format": "sedtune.rl_policy/2"}))
    with pytest.raises(ValueError, match="train it again"):
        AdaptivePolicy.load(str(dst))


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


def test_a_job_restricted_to_some_classes_trains_on_those(synth_set: SynthResult, tmp_path: Path) -> None:
    from envs.evaluator import MetricConfig
    from envs.problem import DataRef

    picked = (synth_set.classes[2], synth_set.classes[0])
    ref = DataRef(synth_set.scores_uri, synth_set.ground_truth_path, synth_set.durations_path, None, picked)
    problem = TuningProblem(ref, ref.load(), SPACE, MetricConfig(), {c: MANUAL for c in picked}, 3, 0)
    opts = FAST.model_copy(update={"max_iterations": 1})
    res = RLStrategy(opts).run(problem, 20.0, 0, RunContext(str(tmp_path)))
    assert res.info["iterations"] == 1
    assert list(res.naive) == list(picked) and res.policies["adaptive"].classes == list(picked)


def test_below_one_threshold_per_setting_the_table_is_manual_and_without_steps_nothing_trains(
    problem: TuningProblem, tmp_path: Path
) -> None:
    res = RLStrategy(RLOptions()).run(problem, 2.0, 0, RunContext(str(tmp_path)))
    assert res.info["static"] == "manual" and res.readouts["untrained"] == problem.manual
    assert res.info["env_steps"] == 0 and res.info["gate"] is None and "untrained" in res.info["adaptive"]
    assert res.evaluations == 1.0
    policy: AdaptivePolicy = res.policies["adaptive"]
    assert policy.adapt == [False] * len(problem.classes)
    f, _ = evaluate_joint(problem, problem.manual)
    f_policy = macro_f(clip_counts_of_events(problem.evaluator, policy.events(problem.tuning)))
    assert f_policy == pytest.approx(f)


def _replica_clips(algo: Any) -> list[tuple[int, int, list[list[str]]]]:
    """(worker index, pid, sorted clip names of each replica) of every remote EnvRunner."""

    def clips(er: Any) -> tuple[int, int, list[list[str]]]:
        names = [sorted(e.unwrapped.data.filenames) for e in er.env.unwrapped.envs]
        return er.worker_index, os.getpid(), names

    return algo.env_runner_group.foreach_env_runner(clips, local_env_runner=False)  # type: ignore[no-any-return]


def test_replicas_read_their_own_shards_also_after_a_runner_dies(
    problem: TuningProblem, trained: StrategyResult
) -> None:
    opts = RLOptions(num_env_runners=2, num_envs_per_env_runner=2, minibatch_size=128, num_epochs=1)
    grid: ResidualGrid = trained.policies["adaptive"].grid
    holdout = problem.folds % 3
    cfg = env_config(problem, opts, grid, holdout, 3)
    assert cfg["shards"] == [0, 1, 2, 3] and "scores" in cfg and cfg["holdout"] == holdout.tolist()
    assert json.loads(json.dumps(cfg)) == cfg, "env_config must be plain JSON (no scores, no objects)"
    algo = build_algorithm(problem, opts, 0, grid, holdout, 3, 256)
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
        return RLStrategy(RLOptions(train_batch_size=1024, minibatch_size=256, num_epochs=4))

    @pytest.fixture
    def result(self, problem: TuningProblem, tmp_path: Path) -> StrategyResult:
        if "r" not in _CONTRACT_RESULTS:
            _CONTRACT_RESULTS["r"] = self._run(problem, tmp_path)
        return _CONTRACT_RESULTS["r"]


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
    # The policy may switch each class to its best other setting (the other decoder).
    opts = RLOptions(static_share=0.5, alternatives=2, train_batch_size=256, minibatch_size=128, num_epochs=4,
                     episode_clips=10)
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
    # The sweep gives each class the decoder that scores better: the grid's optimum, F 1.
    table = trained2.readouts["untrained"]
    assert table["Chatter"].decoder == "boxes" and table["Train"].decoder == "frames"
    f, _ = evaluate_joint(decoder_prob, dict(table))
    assert f == pytest.approx(1.0, abs=1e-12)
    # A class's alternative is its best other setting of the sweep (tuning F).
    grid: ResidualGrid = trained2.policies["adaptive"].grid
    for c, alt in zip(decoder_prob.classes, grid.alternatives, strict=True):
        assert alt[0] == table[c] and Setting.of(alt[1]) != Setting.of(alt[0])
        others = [x for x in trained2.candidates[c] if Setting.of(x.params) != Setting.of(alt[0])]
        best = max(float(np.nan_to_num(f_measure(*x.counts.sum(axis=0)), nan=-1)) for x in others)
        mine = next(x for x in others if x.params == alt[1])
        assert float(np.nan_to_num(f_measure(*mine.counts.sum(axis=0)), nan=-1)) == best


def test_two_decoder_policy_saves_its_grid_and_applies_box_settings(
    decoder_prob: TuningProblem, trained2: StrategyResult, tmp_path: Any, capsys: Any
) -> None:
    import csv

    from service.cli import main

    path = trained2.artifacts["policy"]
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    assert meta["format"] == "sedtune.rl_policy/3"
    assert {p["decoder"] for alt in meta["grid"]["alternatives"] for p in alt} == {"frames", "boxes"}
    loaded = AdaptivePolicy.load(path)
    policy = _ungated(trained2.policies["adaptive"])
    loaded.adapt = policy.adapt
    assert loaded.grid == policy.grid
    data = decoder_prob.tuning
    scores = [data.scores(c) for c in loaded.classes]
    actions = loaded.actions(scores, data.frame_hop_s)
    assert np.array_equal(actions, policy.actions(scores, data.frame_hop_s))
    loaded.save(str(tmp_path / "ungated.pt"), data.frame_hop_s)
    out = tmp_path / "events.tsv"
    code = main(["apply", "--scores", decoder_prob.data.scores, "--policy", str(tmp_path / "ungated.pt"),
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
