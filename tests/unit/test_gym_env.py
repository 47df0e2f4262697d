"""The post-processing Gymnasium environment: API conformance, determinism, the reward's
telescoping to the episode's macro F, observations, empty clips and per-replica shards."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from gymnasium.spaces import MultiDiscrete
from gymnasium.utils.env_checker import check_env

from envs.action_grid import ActionGrid
from envs.evalset import EvalSet
from envs.evaluator import Evaluator, MetricConfig
from envs.events import ClassEvents
from envs.gym_data import load_shards, observation, replica_shards
from envs.gym_env import PostProcessingEnv
from envs.metrics.counts import Counts
from envs.metrics.fscore import class_f_measure, macro_f_measure
from envs.params import ClassParams
from envs.problem import DataRef
from envs.scoreset import ClassScores
from envs.space import SearchSpace
from envs.synth import SynthResult, generate
from envs.synth_config import SynthConfig

SPACE = SearchSpace(kernels=(1, 5, 9), threshold_low=0.05, threshold_high=0.95, threshold_step=0.1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    # 4 shards of 6 clips: enough to give replicas distinct shards.
    cfg = SynthConfig(n_clips=24, n_classes=3, seed=1, clips_per_shard=6)
    return generate(str(tmp_path_factory.mktemp("synth")), cfg)


@pytest.fixture(scope="module")
def data(synth: SynthResult) -> EvalSet:
    return DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path).load()


@pytest.fixture
def env(data: EvalSet) -> PostProcessingEnv:
    return PostProcessingEnv(data, SPACE, episode_clips=8)


Episode = tuple[list[np.ndarray], list[float], list[np.ndarray]]


def _rollout(env: PostProcessingEnv, seed: int, action_seed: int) -> Episode:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(action_seed)
    observations, rewards, actions = [obs], [], []
    done = False
    while not done:
        a = env.action_space.sample()
        obs, r, done, truncated, _ = env.step(a)
        assert not truncated
        observations.append(obs)
        rewards.append(float(r))
        actions.append(a)
    return observations, rewards, actions


def test_passes_gymnasium_env_checker(env: PostProcessingEnv) -> None:
    with warnings.catch_warnings():
        # The checker cannot test render modes without a registered spec; we have none.
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(env)


def test_spaces_follow_the_paper_layout(env: PostProcessingEnv, data: EvalSet) -> None:
    c = len(data.classes)
    assert env.observation_space.shape == (env.n_frames_max, c)
    assert env.observation_space.dtype == np.float32
    k, t = len(SPACE.kernels), len(SPACE.threshold_grid())
    assert env.action_space == MultiDiscrete([k] * c + [t] * c)


def test_same_seed_and_actions_give_identical_episodes(data: EvalSet) -> None:
    a = PostProcessingEnv(data, SPACE, episode_clips=8)
    b = PostProcessingEnv(data, SPACE, episode_clips=8)
    obs_a, rew_a, act_a = _rollout(a, seed=11, action_seed=5)
    obs_b, rew_b, act_b = _rollout(b, seed=11, action_seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(act_a, act_b, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b, strict=True))
    assert rew_a == rew_b
    # Another seed draws other clips.
    a.reset(seed=12)
    order_12 = a.clip_order
    a.reset(seed=11)
    assert not np.array_equal(order_12, a.clip_order)


def _direct_macro_f(data: EvalSet, grid: ActionGrid, clips: np.ndarray, actions: list[np.ndarray]) -> float:
    """The episode's macro F, computed clip by clip with a fresh evaluator (no count table)."""
    totals = {c: Counts.zero() for c in data.classes}
    for clip, action in zip(clips, actions, strict=True):
        single = Evaluator(data.subset([int(clip)]), MetricConfig())
        for c, p in grid.params(action, data.classes).items():
            totals[c] = totals[c] + single.class_counts(c, p)
    f = macro_f_measure([class_f_measure(n) for n in totals.values()])
    return 0.0 if math.isnan(f) else f


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_undiscounted_return_is_the_episode_macro_f(env: PostProcessingEnv, data: EvalSet, seed: int) -> None:
    _, rewards, actions = _rollout(env, seed=seed, action_seed=100 + seed)
    expected = _direct_macro_f(data, env.grid, env.clip_order, actions)
    assert sum(rewards) == pytest.approx(expected, abs=1e-12)
    assert all(-1.0 <= r <= 1.0 for r in rewards)


def test_info_carries_the_step_counts(env: PostProcessingEnv, data: EvalSet) -> None:
    env.reset(seed=3)
    clip = int(env.clip_order[0])
    action = env.action_space.sample()
    _, _, _, _, info = env.step(action)
    assert info["clip"] == data.filenames[clip]
    single = Evaluator(data.subset([clip]))
    for j, (c, p) in enumerate(env.grid.params(action, data.classes).items()):
        n = single.class_counts(c, p)
        assert info["class_counts"][j].tolist() == [n.nref, n.nsys, n.ntp]


def test_observation_is_the_clip_matrix_padded_or_cut(data: EvalSet) -> None:
    scores = [data.scores(c) for c in data.classes]
    n_frames = int(np.diff(scores[0].offsets)[0])
    long = observation(scores, 0, n_frames + 5)
    assert long.shape == (n_frames + 5, len(scores)) and long.dtype == np.float32
    for j, cs in enumerate(scores):
        assert np.array_equal(long[:n_frames, j], cs.clip(0))
    assert not long[n_frames:].any()
    short = observation(scores, 0, 7)
    assert np.array_equal(short[:, 0], scores[0].clip(0)[:7])
    env = PostProcessingEnv(data, SPACE, n_frames_max=7, episode_clips=3)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs, observation(scores, int(env.clip_order[0]), 7))


def _tiny_set() -> EvalSet:
    """Two clips of 20 frames, one class: clip 0 silent (no event), clip 1 one event."""
    hop = 0.1
    p0 = np.full(20, 0.3, np.float32)
    p1 = np.full(20, 0.1, np.float32)
    p1[5:15] = 0.9
    cs = ClassScores("Dog", np.concatenate([p0, p1]), np.array([0, 20, 40], np.int64))
    refs = {"Dog": ClassEvents.from_lists([1], [0.5], [1.5])}
    return EvalSet(["a.wav", "b.wav"], ["Dog"], hop, np.array([2.0, 2.0]), refs, lambda _: cs)


def test_a_clip_without_events() -> None:
    data = _tiny_set()
    space = SearchSpace(kernels=(1,), threshold_low=0.2, threshold_high=0.8, threshold_step=0.2)
    env = PostProcessingEnv(data, space, episode_clips=2)
    thresholds = env.grid.thresholds
    low = thresholds.index(0.2)  # fires on the silent clip (0.3 > 0.2)
    # Find a seed that shows the silent clip first.
    seed = next(s for s in range(100) if env.reset(seed=s)[1]["clip"] == "a.wav")
    env.reset(seed=seed)
    _, r, done, _, info = env.step(np.array([0, low]))
    # A false alarm before any reference event: F is NaN (sed_eval), counted as 0.
    assert info["class_counts"].tolist() == [[0, 1, 0]]
    assert r == 0.0 and not done
    _, r, done, _, info = env.step(np.array([0, low]))
    assert info["class_counts"].tolist() == [[1, 1, 1]]
    # The earlier false alarm now counts: P = 1/2, R = 1, F = 2/3.
    assert r == pytest.approx(2 / 3) and done
    env.reset(seed=seed)
    high = thresholds.index(0.4)  # silent clip stays silent
    _, r, _, _, info = env.step(np.array([0, high]))
    assert info["class_counts"].tolist() == [[0, 0, 0]] and r == 0.0
    _, r, _, _, _ = env.step(np.array([0, high]))
    assert r == pytest.approx(1.0)


def test_rejects_bad_actions_and_steps_after_the_end(env: PostProcessingEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match="nvec"):
        env.step(np.full(len(env.grid.nvec), 99))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.zeros(2, np.int64))
    for _ in range(env.episode_clips):
        env.step(env.action_space.sample())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


def test_action_grid_adds_blocks_only_for_searched_stages() -> None:
    space = SearchSpace(
        kernels=(1, 3), fill_gap_s=(0.0, 0.2), threshold_low=0.1, threshold_high=0.9, threshold_step=0.4
    )
    grid = ActionGrid.from_space(space, 2)
    assert [name for name, _ in grid.blocks] == ["median_filter_frames", "threshold", "fill_gap_s"]
    assert grid.nvec.tolist() == [2, 2, 3, 3, 2, 2]
    params = grid.params(np.array([1, 0, 2, 1, 1, 0]), ["a", "b"])
    assert params["a"] == ClassParams(median_filter_frames=3, threshold=0.9, fill_gap_s=0.2)
    assert params["b"] == ClassParams(median_filter_frames=1, threshold=0.5, fill_gap_s=0.0)


def test_nearest_action_round_trips_grid_points_and_snaps_others() -> None:
    space = SearchSpace(
        kernels=(1, 3, 7), fill_gap_s=(0.0, 0.2), threshold_low=0.1, threshold_high=0.9, threshold_step=0.4
    )
    grid = ActionGrid.from_space(space, 2)
    for action in ([2, 0, 1, 2, 1, 0], [0, 1, 0, 0, 0, 1]):
        params = grid.params(np.array(action), ["a", "b"])
        assert grid.nearest_action([params["a"], params["b"]]).tolist() == action
    off_grid = [ClassParams(median_filter_frames=5, threshold=0.62, fill_gap_s=0.15),
                ClassParams(median_filter_frames=9, threshold=0.05)]
    # kernel 5 -> 3 (first of the nearest), 9 -> 7; thresholds 0.62 -> 0.5, 0.05 -> 0.1; gaps 0.2, 0.0
    assert grid.nearest_action(off_grid).tolist() == [1, 2, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="need 2 class parameters"):
        grid.nearest_action(off_grid[:1])


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


def test_replicas_read_different_shards(synth: SynthResult, data: EvalSet) -> None:
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path)
    seen: list[set[str]] = []
    for worker in (1, 2):
        for vector in (0, 1):
            shards = replica_shards(4, worker, vector, num_workers=2, num_envs=2)
            env = PostProcessingEnv.from_shards(ref, shards, SPACE, episode_clips=4)
            seen.append(set(env.data.filenames))
            assert len(env.data) == 6
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
    env = PostProcessingEnv.from_shards(ref, [0, 1], SPACE, episode_clips=4)
    assert env.data.classes == list(picked)
    assert env.observation_space.shape == (env.n_frames_max, 2)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    clip = data.filenames.index(env.data.filenames[int(env.clip_order[0])])
    assert np.array_equal(obs[: len(data.scores(picked[0]).clip(clip)), 0], data.scores(picked[0]).clip(clip))


# --------------------------------------------------------------------------- both decoders

# 2 frames kernels + 2 step filters x 2 merge criteria of boxes: 6 decodings per class.
SPACE2 = SearchSpace(
    kernels=(1, 5),
    threshold_low=0.05,
    threshold_high=0.95,
    threshold_step=0.1,
    decoders=("frames", "boxes"),
    box_step_filter_s=(0.32, 0.64),
    box_merge=((0.2, None), (None, 2.0)),
)


@pytest.fixture
def env2(data: EvalSet) -> PostProcessingEnv:
    return PostProcessingEnv(data, SPACE2, episode_clips=8)


def test_two_decoder_env_passes_the_checker(env2: PostProcessingEnv) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(env2)


def test_two_decoder_grid_indexes_the_space_settings(env2: PostProcessingEnv, data: EvalSet) -> None:
    c, t = len(data.classes), len(SPACE2.threshold_grid())
    grid = env2.grid
    assert [name for name, _ in grid.blocks] == ["decoding", "threshold"]
    assert env2.action_space == MultiDiscrete([6] * c + [t] * c)
    assert grid.settings() == list(SPACE2.settings)
    assert [s.decoder for s in grid.settings()] == ["frames"] * 2 + ["boxes"] * 4
    # Every (setting, threshold) pair is a point of the space, and the action picks it.
    for si in range(len(SPACE2.settings)):
        for ti in range(t):
            p = grid.class_params(si, ti)
            assert SPACE2.contains(p) and p.validate("grid") == p
    action = np.array([0, 3, 5, 1, 2, 3])  # decodings, then thresholds
    params = grid.params(action, data.classes)
    assert params[data.classes[0]] == ClassParams(median_filter_frames=1, threshold=0.15)
    assert params[data.classes[1]] == SPACE2.settings[3].with_threshold(0.25)
    assert params[data.classes[2]].decoder == "boxes" and params[data.classes[2]].merge_rel == 2.0
    assert grid.nearest_action(list(params.values())).tolist() == action.tolist()


def test_two_decoder_grid_with_clean_up_blocks_keeps_the_setting_order() -> None:
    space = replace(SPACE2, fill_gap_s=(0.0, 0.2), min_duration_s=(0.0, 0.1, 0.3))
    grid = ActionGrid.from_space(space, 1)
    assert grid.settings() == list(space.settings)
    assert [n for n, _ in grid.blocks] == ["decoding", "threshold", "fill_gap_s", "min_duration_s"]
    for si, s in enumerate(space.settings):
        action = grid.nearest_action([s.with_threshold(0.45)])
        setting, thr = grid.split(action)
        assert int(setting[0]) == si and grid.thresholds[int(thr[0])] == pytest.approx(0.45)


def test_nearest_action_crosses_decoders_when_the_grid_lacks_one() -> None:
    boxes_only = ActionGrid.from_space(replace(SPACE2, decoders=("boxes",)), 2)
    frames_only = ActionGrid.from_space(replace(SPACE2, decoders=("frames",)), 2)
    manual = ClassParams(median_filter_frames=7, threshold=0.5)
    box = ClassParams(median_filter_frames=1, threshold=0.3, decoder="boxes", step_filter_s=0.6,
                      merge_rel=2.5)
    # A frames class on a boxes grid: kernel 1 (the only one), the smallest step filter, and
    # a merge criterion of neither kind matches, so the first listed; a box class keeps its own.
    picked = boxes_only.params(boxes_only.nearest_action([manual, box]), ["a", "b"])
    assert picked["a"] == SPACE2.settings[2].with_threshold(0.45)
    assert (picked["b"].step_filter_s, picked["b"].merge_abs, picked["b"].merge_rel) == (0.64, None, 2.0)
    # A box class on a frames grid: the nearest frames kernel to its median filter.
    picked = frames_only.params(frames_only.nearest_action([manual, box]), ["a", "b"])
    assert picked["a"].median_filter_frames == 5 and picked["b"] == ClassParams(median_filter_frames=1,
                                                                                threshold=0.25)


def test_grid_json_round_trip(env2: PostProcessingEnv) -> None:
    grid = env2.grid
    assert ActionGrid.from_json(json.loads(json.dumps(grid.to_json())), grid.n_classes) == grid
    frames = ActionGrid.from_space(SPACE, 3)
    old = {k: v for k, v in frames.to_json().items() if k != "boxes"}  # a sedtune.rl_policy/1 grid
    assert ActionGrid.from_json(old, 3) == frames


def test_count_table_of_box_settings_is_the_evaluators_count(env2: PostProcessingEnv, data: EvalSet) -> None:
    grid = env2.grid
    boxes = [si for si, s in enumerate(grid.settings()) if s.decoder == "boxes"]
    assert boxes and env2.table.shape == (len(data), 3, len(grid.settings()), len(grid.thresholds), 3)
    # Some box entries detect events and some of those hit: the comparison is not vacuous.
    assert env2.table[:, :, boxes, :, 1].sum() > 0 and env2.table[:, :, boxes, :, 2].sum() > 0
    for clip in (0, 7, 19):
        single = Evaluator(data.subset([clip]))
        for ci, c in enumerate(data.classes):
            for si in boxes:
                for ti in range(len(grid.thresholds)):
                    n = single.class_counts(c, grid.class_params(si, ti))
                    assert env2.table[clip, ci, si, ti].tolist() == [n.nref, n.nsys, n.ntp], (clip, c, si, ti)


def test_two_decoder_return_is_the_episode_macro_f(env2: PostProcessingEnv, data: EvalSet) -> None:
    _, rewards, actions = _rollout(env2, seed=5, action_seed=7)
    settings = env2.grid.settings()
    assert any(settings[int(s)].decoder == "boxes" for a in actions for s in env2.grid.split(a)[0])
    expected = _direct_macro_f(data, env2.grid, env2.clip_order, actions)
    assert sum(rewards) == pytest.approx(expected, abs=1e-12)
