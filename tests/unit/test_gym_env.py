"""The residual post-processing environment: its grid, what it shows the agent, its rewards
(the change of a class's F relative to the static table), live decisions, routes, determinism
and per-replica shards."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from gymnasium.spaces import Discrete
from gymnasium.utils.env_checker import check_env

from envs.action_grid import ResidualGrid, alternatives
from envs.boxes import detect_boxes
from envs.errors import SedtuneInputError
from envs.evalset import EvalSet
from envs.evaluator import Evaluator
from envs.events import ClassEvents
from envs.gym_data import NO_UNIT, clip_features, feature_names, load_shards, replica_shards
from envs.gym_env import ResidualEnv, ResidualTables, residual_rewards
from envs.metrics.counts import Counts
from envs.metrics.fscore import class_f_measure
from envs.params import ClassParams
from envs.problem import DataRef
from envs.scoreset import ClassScores
from envs.selection import Candidate
from envs.stack import median_filter_values
from envs.synth import SynthResult, generate
from envs.synth_config import SynthConfig

FRAMES = ClassParams(median_filter_frames=5, threshold=0.5)
BOXES = ClassParams(median_filter_frames=1, threshold=0.4, decoder="boxes", step_filter_s=0.32, merge_abs=0.2)
LOW = ClassParams(median_filter_frames=1, threshold=0.3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    # 4 shards of 6 clips: enough to give replicas distinct shards.
    cfg = SynthConfig(n_clips=24, n_classes=3, seed=1, clips_per_shard=6)
    return generate(str(tmp_path_factory.mktemp("synth")), cfg)


@pytest.fixture(scope="module")
def data(synth: SynthResult) -> EvalSet:
    return DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path).load()


@pytest.fixture(scope="module")
def grid() -> ResidualGrid:
    # Class 0 frames, class 1 boxes (alternative: frames), class 2 frames (alternative: boxes).
    return ResidualGrid(((FRAMES, LOW), (BOXES, FRAMES), (LOW, BOXES)), 0.5, 2, 0.05, 0.95)


@pytest.fixture(scope="module")
def tables(data: EvalSet, grid: ResidualGrid) -> ResidualTables:
    return ResidualTables.build(data, grid)


@pytest.fixture
def env(data: EvalSet, grid: ResidualGrid, tables: ResidualTables) -> ResidualEnv:
    return ResidualEnv(data, grid, holdout=np.arange(len(data)) % 3, n_nets=3, episode_clips=4, tables=tables)


# --------------------------------------------------------------------------- the grid


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_grid_lays_out_alternatives_times_logit_offsets(grid: ResidualGrid) -> None:
    assert (grid.n_alternatives, grid.n_offsets, grid.n_actions, grid.base_action) == (2, 5, 10, 2)
    assert [grid.split(a) for a in (0, 2, 4, 5, 9)] == [(0, -2), (0, 0), (0, 2), (1, -2), (1, 2)]
    assert grid.table == (FRAMES, BOXES, LOW)
    assert grid.params(1, grid.base_action) == BOXES
    # Offsets move the threshold in logit steps of 0.5, inside [0.05, 0.95].
    assert grid.threshold(0, 3) == pytest.approx(_sigmoid(0.5))
    assert grid.threshold(0, 0) == pytest.approx(_sigmoid(-1.0))
    t = math.log(0.3 / 0.7)
    assert grid.threshold(2, 1) == pytest.approx(_sigmoid(t - 0.5))
    assert grid.params(2, 9) == replace(BOXES, threshold=_sigmoid(math.log(0.4 / 0.6) + 1.0))
    edge = ResidualGrid(((replace(LOW, threshold=0.06),),), 1.0, 1, 0.05, 0.95)
    assert edge.threshold(0, 0) == 0.05 and edge.lowest_threshold(0) == 0.05
    assert len(grid.class_actions(1)) == 10 and all(p.validate("x") == p for p in grid.class_actions(1))
    with pytest.raises(ValueError, match="action"):
        grid.split(10)


def test_grid_round_trips_through_json_and_refuses_bad_grids(grid: ResidualGrid) -> None:
    assert ResidualGrid.from_json(grid.to_json()) == grid
    with pytest.raises(SedtuneInputError, match="same number"):
        ResidualGrid(((FRAMES,), (FRAMES, LOW)))
    with pytest.raises(SedtuneInputError, match="offset_step_logit"):
        ResidualGrid(((FRAMES,),), 0.0)
    with pytest.raises(SedtuneInputError, match="threshold_low"):
        ResidualGrid(((FRAMES,),), 0.5, 1, 0.9, 0.1)
    with pytest.raises(SedtuneInputError, match="residual grid"):
        ResidualGrid.from_json({"alternatives": []} | {"max_offset": 1})


def test_a_hysteresis_release_stays_below_a_moved_threshold() -> None:
    hyst = ClassParams(median_filter_frames=1, threshold=0.5, threshold_off=0.45)
    g = ResidualGrid(((hyst,),), 1.0, 1)
    assert g.params(0, 0).threshold_off == pytest.approx(g.threshold(0, 0))
    assert g.params(0, 2).threshold_off == 0.45


def test_alternatives_are_the_table_then_the_best_other_settings() -> None:
    def cand(p: ClassParams, tp: int) -> Candidate:
        return Candidate(p, np.array([[10, 10, tp]] * 2, np.int64))

    cands = [cand(FRAMES, 5), cand(replace(FRAMES, threshold=0.7), 8), cand(BOXES, 6), cand(LOW, 3),
             cand(replace(LOW, threshold=0.6), 4)]
    # Per setting its best candidate; the table's setting first whatever its F; then by F.
    assert alternatives(cands, FRAMES, 3) == (FRAMES, BOXES, replace(LOW, threshold=0.6))
    assert alternatives(cands, LOW, 2) == (LOW, replace(FRAMES, threshold=0.7))
    assert alternatives(cands[:1], FRAMES, 3) == (FRAMES, FRAMES, FRAMES)


# --------------------------------------------------------------------------- what the agent sees


def test_features_are_the_documented_columns(data: EvalSet, grid: ResidualGrid) -> None:
    scores = [data.scores(c) for c in data.classes]
    feats = clip_features(scores, grid, data.frame_hop_s)
    names = feature_names(data.classes)
    n, c = len(data), len(data.classes)
    assert feats.shape == (n, c, 2 * c + 9) == (n, c, len(names)) and feats.dtype == np.float32

    def lg(p: float) -> float:
        q = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(q / (1 - q))

    col = {name: i for i, name in enumerate(names)}
    for i in (0, 5, 23):
        everything = np.sort(np.concatenate([cs.clip(i) for cs in scores]))
        for j, cs in enumerate(scores):
            f, t = feats[i, j], lg(grid.table[j].threshold)
            assert f[:c].tolist() == [float(k == j) for k in range(c)]
            frames = np.sort(cs.clip(i))
            for q in (0.5, 0.9, 1.0):
                expected = (lg(float(frames[math.floor(q * (len(frames) - 1))])) - t) / 4
                assert f[col[f"score_q{q:g}"]] == pytest.approx(expected, abs=1e-5)
            assert [f[col[f"max[{k}]"]] for k in data.classes] == pytest.approx(
                [lg(float(s.clip(i).max())) / 4 for s in scores], abs=1e-5)
            median = float(everything[(len(everything) - 1) // 2])
            assert f[col["clip_median"]] == pytest.approx(lg(median) / 4, abs=1e-5)
            conf = _unit_confidences(cs, i, grid.table[j], grid.lowest_threshold(j), data.frame_hop_s)
            top = [(lg(v) - t) / 4 for v in sorted(conf, reverse=True)[:3]]
            top += [NO_UNIT] * (3 - len(top))
            assert [f[col[f"unit{k}"]] for k in (1, 2, 3)] == pytest.approx(top, abs=1e-5)
            assert f[col["units"]] == pytest.approx(len(conf) / 5)
            assert f[col["units_above"]] == pytest.approx(sum(v > grid.table[j].threshold for v in conf) / 5)
    with pytest.raises(ValueError, match="classes"):
        clip_features(scores[:2], grid, data.frame_hop_s)


def _unit_confidences(cs: ClassScores, clip: int, p: ClassParams, low: float, hop: float) -> list[float]:
    """One clip's decoding units, by their definition (boxes: confidences; frames: run peaks)."""
    values = cs.clip(clip)
    offsets = np.array([0, len(values)], np.int64)
    if p.decoder == "boxes":
        return detect_boxes(values, offsets, hop, p.box_setting).confidence.tolist()
    filtered = median_filter_values(values, offsets, p.median_filter_frames).astype(np.float64)
    peaks, run = [], []
    for v in filtered:
        if v > low:
            run.append(v)
        elif run:
            peaks.append(max(run))
            run = []
    return peaks + ([max(run)] if run else [])


def test_passes_gymnasium_env_checker(env: ResidualEnv) -> None:
    with warnings.catch_warnings():
        # The checker cannot test render modes without a registered spec; we have none.
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(env)


def test_observation_is_the_route_then_the_pairs_features(env: ResidualEnv, tables: ResidualTables) -> None:
    assert env.action_space == Discrete(10)
    assert env.observation_space.shape == (3 + tables.features.shape[-1],)
    obs, info = env.reset(seed=4)
    assert info["class"] == env.classes[env.episode_pairs[0][1]]
    for step in range(5):
        clip, ci = env.episode_pairs[step]
        route = int(np.argmax(obs[:3]))
        assert obs[:3].sum() == 1 and route != env.holdout[clip]
        assert np.array_equal(obs[3:], tables.features[clip, ci])
        obs, _, _, _, info = env.step(env.grid.base_action)
        assert (info["route"], info["clip"]) == (route, env.data.filenames[clip])
        assert info["class"] == env.classes[ci]


# --------------------------------------------------------------------------- rewards


def test_counts_are_the_evaluators_per_clip(
    data: EvalSet, grid: ResidualGrid, tables: ResidualTables
) -> None:
    # Some entries detect events and some hit: the comparison is not vacuous.
    assert tables.counts[..., 1].sum() > 0 and tables.counts[..., 2].sum() > 0
    for clip in (0, 7, 19):
        single = Evaluator(data.subset([clip]))
        for ci, c in enumerate(data.classes):
            for a in range(grid.n_actions):
                n = single.class_counts(c, grid.params(ci, a))
                assert tables.counts[clip, ci, a].tolist() == [n.nref, n.nsys, n.ntp], (clip, c, a)


def test_reward_is_n_times_the_class_f_change_if_only_this_clip_moves(
    data: EvalSet, grid: ResidualGrid, tables: ResidualTables
) -> None:
    ev = Evaluator(data)
    n = len(data)
    assert np.all(tables.rewards[:, :, grid.base_action] == 0)
    nonzero = 0
    for ci, c in enumerate(data.classes):
        per_clip = ev.class_counts_by_group(c, grid.table[ci], np.arange(n), n)
        total = per_clip.sum(axis=0)
        before = class_f_measure(_counts(total))
        for clip in range(n):
            for a in (0, 4, 7):
                moved = total - per_clip[clip] + _clip_counts(data, c, clip, grid, ci, a)
                f = class_f_measure(_counts(moved))
                expected = n * ((0.0 if math.isnan(f) else f) - (0.0 if math.isnan(before) else before))
                assert tables.rewards[clip, ci, a] == pytest.approx(expected, abs=1e-5)
                nonzero += expected != 0
    assert nonzero > 10


def _counts(v: np.ndarray) -> Counts:
    return Counts(int(v[0]), int(v[1]), int(v[2]))


def _clip_counts(data: EvalSet, c: str, clip: int, grid: ResidualGrid, ci: int, a: int) -> np.ndarray:
    n = Evaluator(data.subset([clip])).class_counts(c, grid.params(ci, a))
    return np.array([n.nref, n.nsys, n.ntp])


def test_rewards_of_a_small_table_by_hand() -> None:
    # One class, 2 clips x 3 actions (base 1). Table totals: nref 4, nsys 4, ntp 2 -> F 0.5.
    counts = np.array([[[[2, 3, 1], [2, 2, 1], [2, 0, 0]]], [[[2, 2, 1], [2, 2, 1], [2, 1, 1]]]])
    r = residual_rewards(counts, 1)
    # F = 2 ntp / (nref + nsys). Clip 0, action 0: totals [4, 5, 2] -> F 4/9; action 2:
    # totals [4, 2, 1] -> F 1/3.
    assert r[0, 0].tolist() == pytest.approx([2 * (4 / 9 - 0.5), 0.0, 2 * (1 / 3 - 0.5)])
    # Clip 1, action 2: totals [4, 3, 2] -> F 4/7.
    assert r[1, 0].tolist() == pytest.approx([0.0, 0.0, 2 * (4 / 7 - 0.5)])


# --------------------------------------------------------------------------- live decisions


def test_live_pairs_are_those_where_some_action_changes_the_events(
    data: EvalSet, grid: ResidualGrid, tables: ResidualTables
) -> None:
    assert 0 < tables.live.sum() < tables.live.size
    for clip in range(len(data)):
        single = Evaluator(data.subset([clip]))
        for ci, c in enumerate(data.classes):
            events = [single.events(c, p) for p in grid.class_actions(ci)]
            base = events[grid.base_action]
            changed = any(len(e.onset_s) != len(base.onset_s) or not np.array_equal(e.onset_s, base.onset_s)
                          or not np.array_equal(e.offset_s, base.offset_s) for e in events)
            assert tables.live[clip, ci] == changed, (clip, c)
    # A pair that is not live has the same counts under every action.
    dead = ~tables.live
    assert np.all(tables.counts[dead] == tables.counts[dead][:, :1])


def test_episodes_show_live_pairs_only_and_every_one_of_them(
    env: ResidualEnv, tables: ResidualTables
) -> None:
    live = {tuple(p) for p in np.argwhere(tables.live).tolist()}
    assert {tuple(p) for p in env.pairs.tolist()} == live
    assert env.episode_steps == min(4 * 3, len(live))
    seen: set[tuple[int, int]] = set()
    for seed in range(200):
        env.reset(seed=seed)
        pairs = [tuple(p) for p in env.episode_pairs.tolist()]
        assert len(set(pairs)) == len(pairs) and set(pairs) <= live
        seen |= set(pairs)
    assert seen == live


def test_with_no_live_pair_every_pair_is_shown() -> None:
    # One class, two clips whose scores never reach any threshold of the grid.
    cs = ClassScores("Dog", np.full(40, 0.01, np.float32), np.array([0, 20, 40], np.int64))
    refs = {"Dog": ClassEvents.from_lists([1], [0.5], [1.5])}
    data = EvalSet(["a.wav", "b.wav"], ["Dog"], 0.1, np.array([2.0, 2.0]), refs, lambda _: cs)
    env = ResidualEnv(data, ResidualGrid(((LOW,),), 0.5, 1), episode_clips=5)
    assert not env.tables.live.any() and env.pairs.tolist() == [[0, 0], [1, 0]]
    env.reset(seed=0)
    steps = [env.step(a) for a in (0, 2)]
    assert [s[1] for s in steps] == [0.0, 0.0] and [s[2] for s in steps] == [False, True]
    assert sorted(s[4]["counts"].tolist() for s in steps) == [[0, 0, 0], [1, 0, 0]]


# --------------------------------------------------------------------------- routes, episodes


def test_routes_train_every_network_but_the_clips_held_out_one(env: ResidualEnv) -> None:
    used: dict[int, set[int]] = {}
    for seed in range(100):
        obs, _ = env.reset(seed=seed)
        for step in range(env.episode_steps):
            clip = int(env.episode_pairs[step][0])
            route = int(np.argmax(obs[:3]))
            assert route != env.holdout[clip]
            used.setdefault(clip, set()).add(route)
            obs, *_ = env.step(env.grid.base_action)
    assert all(r == {0, 1, 2} - {int(env.holdout[c])} for c, r in used.items() if len(r) > 1)
    assert any(len(r) == 2 for r in used.values())


def test_same_seed_and_actions_give_identical_episodes(env: ResidualEnv, data: EvalSet,
                                                        grid: ResidualGrid, tables: ResidualTables) -> None:
    other = ResidualEnv(data, grid, holdout=np.arange(len(data)) % 3, n_nets=3, episode_clips=4,
                        tables=tables)

    def rollout(e: ResidualEnv, seed: int) -> list[tuple[list[float], float]]:
        obs, _ = e.reset(seed=seed)
        e.action_space.seed(seed)
        out, done = [], False
        while not done:
            obs, r, done, truncated, _ = e.step(e.action_space.sample())
            assert not truncated
            out.append((obs.tolist(), float(r)))
        return out

    assert rollout(env, 11) == rollout(other, 11)
    env.reset(seed=12)
    order = env.episode_pairs
    env.reset(seed=11)
    assert not np.array_equal(order, env.episode_pairs)


def test_rejects_bad_actions_steps_after_the_end_and_bad_arguments(env: ResidualEnv, data: EvalSet,
                                                                   grid: ResidualGrid) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(10)
    for _ in range(env.episode_steps):
        env.step(0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(SedtuneInputError, match="holdout"):
        ResidualEnv(data, grid, holdout=np.full(len(data), 3), n_nets=3, tables=env.tables)
    with pytest.raises(SedtuneInputError, match="grid has 1 classes"):
        ResidualEnv(data, ResidualGrid(((LOW,),)))


# --------------------------------------------------------------------------- replicas and shards


@pytest.mark.parametrize(
    ("n_shards", "num_workers", "num_envs"),
    [(4, 2, 2), (8, 2, 2), (3, 2, 2), (5, 0, 1), (2, 1, 3)],
)
def test_replicas_split_the_shards_round_robin(n_shards: int, num_workers: int, num_envs: int) -> None:
    replicas = [(w, v) for w in range(1, max(num_workers, 1) + 1) for v in range(num_envs)]
    if num_workers == 0:
        replicas = [(0, v) for v in range(num_envs)]
    picks = [replica_shards(n_shards, w, v, num_workers, num_envs) for w, v in replicas]
    assert all(p for p in picks)
    covered = sorted(s for p in picks for s in p)
    if n_shards >= len(replicas):
        assert covered == list(range(n_shards))  # each shard read by exactly one replica
    else:
        assert set(covered) == set(range(n_shards))  # replicas share, every shard in play


def test_replica_index_errors() -> None:
    with pytest.raises(ValueError, match="vector_index"):
        replica_shards(4, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="worker_index"):
        replica_shards(4, 3, 0, 2, 2)


def test_replicas_read_different_shards_and_share_tables(synth: SynthResult, data: EvalSet,
                                                         grid: ResidualGrid) -> None:
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path)
    seen: list[set[str]] = []
    holdout = {n: i % 2 for i, n in enumerate(data.filenames)}
    for worker in (1, 2):
        for vector in (0, 1):
            shards = replica_shards(4, worker, vector, num_workers=2, num_envs=2)
            env = ResidualEnv.from_shards(ref, shards, grid, holdout=holdout, n_nets=2, episode_clips=4)
            seen.append(set(env.data.filenames))
            assert len(env.data) == 6
            assert env.holdout.tolist() == [holdout[n] for n in env.data.filenames]
            again = ResidualEnv.from_shards(ref, shards, grid, holdout=holdout, n_nets=2)
            assert again.tables is env.tables
    assert all(a.isdisjoint(b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert set().union(*seen) == set(data.filenames)


def test_shards_are_restricted_to_the_clips_in_play(synth: SynthResult, data: EvalSet) -> None:
    tuning = data.filenames[::2]
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path, clips=tuning)
    sub = load_shards(ref, [0, 1])
    assert set(sub.filenames) <= set(tuning) and len(sub) == 6
    # The same clips' scores and events as in the whole set.
    full_index = {n: i for i, n in enumerate(data.filenames)}
    for c in data.classes:
        for i, name in enumerate(sub.filenames):
            assert np.array_equal(sub.scores(c).clip(i), data.scores(c).clip(full_index[name]))
        assert len(sub.refs[c]) == sum(int((data.refs[c].clip == full_index[n]).sum()) for n in sub.filenames)


def test_replicas_see_only_the_jobs_classes_in_its_order(synth: SynthResult, data: EvalSet) -> None:
    picked = (data.classes[2], data.classes[0])
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path, classes=picked)
    g = ResidualGrid(((FRAMES,), (LOW,)), 0.5, 1)
    env = ResidualEnv.from_shards(ref, [0, 1], g, episode_clips=4)
    assert env.data.classes == list(picked)
    assert env.observation_space.shape == (1 + 2 * 2 + 9,)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    clip, ci = env.episode_pairs[0]
    whole = data.filenames.index(env.data.filenames[clip])
    scores = [data.scores(c).take(np.array([whole])) for c in picked]
    assert np.array_equal(obs[1:], clip_features(scores, g, data.frame_hop_s)[0, ci])
