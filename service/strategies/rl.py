"""The rl strategy: PPO (Ray RLlib, new API stack) on replicas of the post-processing env.

The environment (:class:`envs.gym_env.PostProcessingEnv`) shows one clip per step, takes
every class's (setting, threshold) for that clip (a setting of ``space.settings``: a
``frames`` kernel or a ``boxes`` setting, with gap filling and minimum duration; see
:class:`envs.gym_env.ActionGrid`) and pays the clip's marginal macro F1; with
discount 1 (the default here) an episode's return is its macro F1 exactly, which fixes the
credit assignment of the paper's setup (one end-of-pass reward, discounted by 0.99 per clip).

Distribution. Every EnvRunner holds ``num_envs_per_env_runner`` replicas; each replica reads
its own Parquet shard(s), chosen round-robin from its worker and vector index
(:func:`envs.gym_env.replica_shards`); ``env_config`` carries only URIs, shard paths, clip
names and numbers, never scores. RLlib's new stack hands every sub-environment of an
EnvRunner the same ``EnvContext`` (``vector_index`` 0: Ray 2.60's
``SingleAgentEnvRunner.make_env`` registers ``lambda: creator(env_ctx)`` with
``gym.make_vec``), so :func:`make_replica_env` numbers the replicas of its process itself.

Budget. An env step is one clip: ``steps / N`` full-set evaluations for N tuning clips.
Read-outs evaluate per-class settings on the tuning clips, ``1 / C`` evaluation each (each
setting once; ``count_readouts``). Training stops before the next iteration and its read-out
could exceed the budget.

Read-outs (both produced):

- *static table* (what the other strategies produce): after every iteration the greedy
  policy acts on every tuning clip; per class, of the ``static_top_k`` settings it picks most
  often, the one with the best tuning F (:func:`static_table`; ``static_top_k = 1`` is the
  plain mode). The best table over the iterations is ``naive``; every evaluated per-class
  setting is a ``candidate`` (with per-fold counts) for robust selection; the first
  iteration's table, that of the untrained policy, is ``info["untrained_params"]``.
- *clip-adaptive policy* (``result.adaptive``): :class:`~service.strategies.rl_policy.AdaptivePolicy`,
  the policy of the best iteration applied clip by clip; plain torch (``rl_policy.py``),
  saved as ``policy.pt`` + ``policy.json`` in the work directory
  (``result.artifacts["policy"]``), so inference needs no Ray.

The networks see a compact view of the clip (per class, quantiles and mean of its frames,
:class:`~service.strategies.rl_policy.ClipFeatures`); the actor and critic are separate MLPs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field

from envs.errors import SedtuneInputError
from envs.evaluator import MetricConfig
from envs.gym_env import ActionGrid, PostProcessingEnv, replica_shards
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem, macro_from_counts
from envs.scoreset import ScoreSet
from envs.selection import Candidate
from envs.space import SearchSpace
from service.strategies.base import RunContext, Strategy, StrategyResult, Trajectory, current_node
from service.strategies.rl_policy import AdaptivePolicy, PolicyNet, ValueNet

LOG = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

ENV_NAME = "sedtune-postprocessing"


class RLOptions(BaseModel):
    """Options of the rl strategy (PPO); logged verbatim with the run.

    Attributes:
        lr: Adam learning rate.
        episode_clips: Clips per episode (one env step per clip).
        num_env_runners: EnvRunner actors (0: sample in the driver).
        num_envs_per_env_runner: Environment replicas per EnvRunner.
        num_cpus_per_env_runner: CPUs Ray reserves per EnvRunner (fractions allowed).
        hidden: Hidden layer sizes of the policy and value MLPs.
        quantiles: Per-class quantiles of the clip's probabilities the networks see.
        train_batch_size: Env steps (clips) per training iteration.
        minibatch_size: SGD minibatch size (env steps).
        num_epochs: Passes over each training batch.
        gamma: Discount; 1 makes the return the episode's macro F1.
        lambda_: GAE lambda (1: Monte-Carlo returns, 0: one-step).
        entropy_coeff: Entropy bonus.
        clip_param: PPO ratio clip.
        static_top_k: Static read-out: per class, the best of the settings the greedy policy
            picks most often (1: the plain mode); see :func:`static_table`.
        count_readouts: Count the read-outs' evaluations (each new per-class setting costs
            1 / C full-set evaluations) against the budget.
        default_budget: Full-set evaluations when the job gives no budget.
        max_iterations: Stop after this many training iterations (None: budget only).
        sample_timeout_s: Seconds an EnvRunner may take for one sample call.
        learner_threads: Torch threads of the driver-side learner while training; the
            networks are tiny, and more threads only contend with the EnvRunners.
        prior_logit: Warm start: the initial policy's logits favour the manual setting's
            nearest grid action by this much in every action dimension (0: uniform). The
            untrained greedy policy is then the manual table on the grid, on every clip,
            while sampling stays broad. Off by default: on dcase2021-baseline-student
            (2 splits, budget 200) a logit of 1 lowered the static table's held-out F1 by
            about 2 points (its greedy picks, the static read-out's candidates, stayed near
            manual) and its clip-adaptive policy did not beat manual either.
        adaptive_every: Evaluate the clip-adaptive policy on the tuning clips before
            training, after every this many iterations and after the last (one full-set
            evaluation each, counted with ``count_readouts``); the best is the read-out.
    """

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(default=1e-3, gt=0)
    episode_clips: int = Field(default=32, ge=1)
    num_env_runners: int = Field(default=2, ge=0)
    num_envs_per_env_runner: int = Field(default=2, ge=1)
    num_cpus_per_env_runner: float = Field(default=0.5, ge=0)
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(64, 64), min_length=1)
    quantiles: int = Field(default=16, ge=2)
    train_batch_size: int = Field(default=2048, ge=1)
    minibatch_size: int = Field(default=512, ge=1)
    num_epochs: int = Field(default=8, ge=1)
    gamma: float = Field(default=1.0, gt=0, le=1)
    lambda_: float = Field(default=0.5, ge=0, le=1)
    entropy_coeff: float = Field(default=0.0, ge=0)
    clip_param: float = Field(default=0.2, gt=0)
    static_top_k: int = Field(default=5, ge=1)
    count_readouts: bool = True
    default_budget: float = Field(default=100.0, gt=0)
    max_iterations: int | None = Field(default=None, ge=1)
    sample_timeout_s: float = Field(default=120.0, gt=0)
    learner_threads: int = Field(default=1, ge=1)
    prior_logit: float = Field(default=0.0, ge=0)
    adaptive_every: int = Field(default=10, ge=1)


# --------------------------------------------------------------------------- read-outs


def ranked_choices(
    actions: I64, grid: ActionGrid, classes: Sequence[str], top_k: int
) -> dict[str, list[ClassParams]]:
    """Per class, the ``top_k`` settings the actions pick most often (most frequent first).

    Args:
        actions: Greedy actions of the tuning clips, (n_clips, len(nvec)).
        grid: The action grid.
        classes: Class order of the actions.
        top_k: How many settings per class.
    """
    setting, thr = grid.split(actions)
    out = {}
    for j, c in enumerate(classes):
        pairs, counts = np.unique(np.stack([setting[:, j], thr[:, j]], axis=1), axis=0, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:top_k]
        out[c] = [grid.class_params(int(pairs[i, 0]), int(pairs[i, 1])) for i in order]
    return out


class CountCache:
    """Per-fold counts of the per-class settings evaluated so far (each evaluated once).

    Evaluating one class's setting on every tuning clip costs ``1 / C`` full-set evaluations.

    Args:
        problem: The tuning problem (its evaluator and folds).
    """

    def __init__(self, problem: TuningProblem) -> None:
        self.problem = problem
        self.counts: dict[str, dict[ClassParams, I64]] = {c: {} for c in problem.classes}

    def get(self, label: str, params: ClassParams) -> I64:
        """Counts (n_folds, 3) of one class's setting, evaluated on first use."""
        known = self.counts[label]
        if params not in known:
            p = self.problem
            known[params] = p.evaluator.class_counts_by_group(label, params, p.folds, p.n_folds)
        return known[params]

    @property
    def evaluations(self) -> float:
        """Full-set evaluations spent on the settings in the cache."""
        return sum(len(v) for v in self.counts.values()) / len(self.counts)

    def candidates(self) -> dict[str, list[Candidate]]:
        """Every evaluated setting per class, with its fold counts."""
        return {c: [Candidate(p, n) for p, n in v.items()] for c, v in self.counts.items()}


def static_table(
    actions: I64, grid: ActionGrid, classes: Sequence[str], cache: CountCache, top_k: int
) -> tuple[dict[str, ClassParams], float, float]:
    """The static read-out of a greedy policy on the tuning clips.

    Per class, among the ``top_k`` settings the policy picks most often, the one with the
    best tuning F (the more frequent on ties); ``top_k = 1`` is the plain mode. A
    clip-adaptive policy switches a class off on clips where it hears nothing of it, so for
    a rare class the mode is an "off" setting; the runner-up settings are the ones it uses
    where the class occurs.

    Returns:
        The table, its tuning macro F and the tuning macro F of the plain mode table.
    """
    from envs.metrics.fscore import f_measure

    table: dict[str, ClassParams] = {}
    picked: dict[str, I64] = {}
    mode: dict[str, I64] = {}
    for c, options in ranked_choices(actions, grid, classes, top_k).items():
        counts = [cache.get(c, p) for p in options]
        tot = np.stack([n.sum(axis=0) for n in counts])
        f = np.nan_to_num(f_measure(tot[:, 0], tot[:, 1], tot[:, 2]), nan=-1.0)
        i = int(np.argmax(f))
        table[c], picked[c], mode[c] = options[i], counts[i], counts[0]
    return table, macro_from_counts(picked), macro_from_counts(mode)


# --------------------------------------------------------------------------- Ray side

# Replicas created so far in this process, per worker index (see make_replica_env).
_REPLICAS_MADE: dict[int, int] = {}


def make_replica_env(ctx: Mapping[str, Any]) -> PostProcessingEnv:
    """Env creator for RLlib: one replica on the shards of its worker and vector index.

    Args:
        ctx: RLlib's ``EnvContext`` (``env_config`` plus ``worker_index``, ``vector_index``,
            ``num_workers``); see :func:`env_config` for the keys.
    """
    worker = int(getattr(ctx, "worker_index", 0))
    num_workers = int(getattr(ctx, "num_workers", 0) or 0)
    num_envs = int(ctx["num_envs_per_env_runner"])
    # RLlib 2.60's new stack gives every sub-env of an EnvRunner the same context
    # (vector_index 0), and gym's sync vectorization builds them in index order, num_envs at
    # a time; counting the replicas made in this process recovers the vector index (and
    # would agree with a context that carried it).
    made = _REPLICAS_MADE.get(worker, 0)
    _REPLICAS_MADE[worker] = made + 1
    vector = made % num_envs
    eligible: list[int] = list(ctx["shards"])
    mine = [eligible[i] for i in replica_shards(len(eligible), worker, vector, num_workers, num_envs)]
    LOG.info("env replica worker %d vector %d reads shards %s", worker, vector, mine)
    data = DataRef(ctx["scores"], ctx["ground_truth"], ctx["durations"],
                   None if ctx["clips"] is None else tuple(ctx["clips"]),
                   None if ctx["classes"] is None else tuple(ctx["classes"]))
    return PostProcessingEnv.from_shards(
        data,
        mine,
        space_from_config(ctx["space"]),
        MetricConfig(**ctx["metric"]),
        shard_paths=ctx["shard_paths"],
        episode_clips=int(ctx["episode_clips"]),
        n_frames_max=int(ctx["n_frames_max"]),
    )


def space_config(space: SearchSpace) -> dict[str, Any]:
    """A search space as plain lists and numbers (``env_config``); :func:`space_from_config` inverts it."""
    return {
        "kernels": list(space.kernels), "threshold_low": space.threshold_low,
        "threshold_high": space.threshold_high, "fill_gap_s": list(space.fill_gap_s),
        "min_duration_s": list(space.min_duration_s), "threshold_step": space.threshold_step,
        "decoders": list(space.decoders), "box_kernels": list(space.box_kernels),
        "box_step_filter_s": list(space.box_step_filter_s),
        "box_merge": [list(m) for m in space.box_merge],
        "box_confidence": list(space.box_confidence),
    }


def space_from_config(cfg: Mapping[str, Any]) -> SearchSpace:
    """The search space of :func:`space_config` (tuples again, so that it hashes)."""
    sequences = ("kernels", "fill_gap_s", "min_duration_s", "decoders", "box_kernels", "box_step_filter_s",
                 "box_confidence")
    kwargs: dict[str, Any] = {k: tuple(v) if k in sequences else v for k, v in cfg.items()}
    if "box_merge" in cfg:
        kwargs["box_merge"] = tuple((a, r) for a, r in cfg["box_merge"])
    return SearchSpace(**kwargs)


def env_config(problem: TuningProblem, opts: RLOptions, n_frames_max: int) -> dict[str, Any]:
    """What replicas need to read their own shards: URIs, shard paths, clip names, numbers."""
    ref = problem.data
    scores = ScoreSet.open(ref.scores)
    wanted = set(problem.tuning.filenames)
    # Shards without any tuning clip would leave a replica without data.
    eligible = [i for i, s in enumerate(scores.shards) if any(n in wanted for n in s.filenames)]
    sp = problem.space
    return {
        "scores": ref.scores,
        "ground_truth": ref.ground_truth,
        "durations": ref.durations,
        "clips": list(problem.tuning.filenames),
        "classes": None if ref.classes is None else list(ref.classes),
        "shard_paths": [s.path for s in scores.shards],
        "shards": eligible,
        "space": space_config(sp),
        "metric": {"t_collar_s": problem.metric.t_collar_s,
                   "percentage_of_length": problem.metric.percentage_of_length,
                   "segment_s": problem.metric.segment_s},
        "episode_clips": opts.episode_clips,
        "n_frames_max": n_frames_max,
        "num_envs_per_env_runner": opts.num_envs_per_env_runner,
    }


_MODULE_CLASS: type | None = None


def _policy_rl_module_class() -> type:
    """The RLlib module class (built on first use so that importing this file needs no Ray)."""
    global _MODULE_CLASS
    if _MODULE_CLASS is not None:
        return _MODULE_CLASS
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    class PolicyRLModule(TorchRLModule, ValueFunctionAPI):  # type: ignore[misc]
        """PolicyNet (actor) and ValueNet (critic) for PPO; the actor is what gets exported."""

        def setup(self) -> None:
            cfg: Any = self.model_config
            obs_space: Any = self.observation_space
            act_space: Any = self.action_space
            n_classes = int(obs_space.shape[1])
            nvec = [int(n) for n in act_space.nvec]
            self.pi = PolicyNet(n_classes, nvec, cfg["hidden"], cfg["quantiles"])
            self.vf = ValueNet(n_classes, cfg["hidden"], cfg["quantiles"])
            if cfg.get("prior_action") is not None and cfg.get("prior_logit", 0.0) > 0:
                self.pi.favour(cfg["prior_action"], float(cfg["prior_logit"]))
            # One categorical per action dimension (RLlib's own choice for MultiDiscrete).
            dist: Any = TorchMultiCategorical
            self.action_dist_cls = dist.get_partial_dist_cls(input_lens=nvec)

        def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS])}

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
            return self.vf(batch[Columns.OBS])

    # Importable by name (module __getattr__ below), so Ray pickles it by reference.
    PolicyRLModule.__module__ = __name__
    PolicyRLModule.__qualname__ = "PolicyRLModule"
    _MODULE_CLASS = PolicyRLModule
    return PolicyRLModule


def __getattr__(name: str) -> Any:
    if name == "PolicyRLModule":
        return _policy_rl_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- the strategy


@dataclass
class _Readout:
    """The static read-out of the greedy policy after one training iteration."""

    iteration: int
    env_steps: int
    f: float
    mode_f: float
    params: dict[str, ClassParams]


@dataclass
class _AdaptiveReadout:
    """The clip-adaptive policy after one training iteration and its tuning macro F."""

    iteration: int
    f: float
    weights: dict[str, torch.Tensor] = field(repr=False)


class RLStrategy(Strategy):
    """PPO over replicas of the post-processing environment (see the module docstring)."""

    name = "rl"
    Options = RLOptions

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Train, read out after every iteration, keep the best static table and its policy."""
        import ray

        opts: RLOptions = self.options  # type: ignore[assignment]
        t0 = time.perf_counter()
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(opts.learner_threads)
        try:
            run = _Run(problem, opts, seed, ctx)
            return run.train(budget if budget is not None else opts.default_budget, t0)
        finally:
            torch.set_num_threads(threads)
            if started_ray:
                ray.shutdown()


class _Run:
    """One training run: the algorithm, the read-outs and the accounting."""

    def __init__(self, problem: TuningProblem, opts: RLOptions, seed: int, ctx: RunContext) -> None:
        torch.manual_seed(seed)
        self.problem, self.opts, self.seed, self.ctx = problem, opts, seed, ctx
        self.classes = problem.classes
        self.n_clips = len(problem.tuning)
        scores = [problem.tuning.scores(c) for c in self.classes]
        self.n_frames_max = int(max(np.diff(cs.offsets).max() for cs in scores))
        self.grid = ActionGrid.from_space(problem.space, len(self.classes))
        self.policy = AdaptivePolicy.create(
            self.grid, self.classes, self.n_frames_max, opts.hidden, opts.quantiles
        )
        self.scores = scores
        self.cache = CountCache(problem)
        self.trajectory = Trajectory()
        self.readouts: list[_Readout] = []
        self.adaptive: list[_AdaptiveReadout] = []
        self.steps = 0
        self.iteration = 0
        self.top_k = opts.static_top_k

    def spent(self) -> float:
        """Full-set evaluations so far: env steps / N, plus read-outs if counted."""
        readouts = self.cache.evaluations + len(self.adaptive)
        return self.steps / self.n_clips + (readouts if self.opts.count_readouts else 0.0)

    def adaptive_due(self, iteration: int) -> bool:
        """Whether the clip-adaptive policy is evaluated after ``iteration`` (0: untrained)."""
        return iteration % self.opts.adaptive_every == 0

    def train(self, budget: float, t0: float) -> StrategyResult:
        """Iterate until the next iteration (and its read-out) would exceed the budget.

        Raises:
            SedtuneInputError: If the budget does not cover one read-out.
        """
        opts = self.opts
        if opts.count_readouts and budget < 1:
            raise SedtuneInputError(
                f"rl: the budget must cover one static read-out (1 full-set evaluation), but got {budget=}"
            )
        # A read-out evaluates at most top_k new settings per class: top_k full-set evaluations.
        self.top_k = min(opts.static_top_k, int(budget)) if opts.count_readouts else opts.static_top_k
        readout_cost = float(self.top_k) if opts.count_readouts else 0.0
        # One clip-adaptive evaluation after the last iteration is always kept in reserve.
        adaptive_cost = 1.0 if opts.count_readouts else 0.0
        algo: Any = _build(self.problem, opts, self.seed, self.n_frames_max, self.grid)
        last = opts.train_batch_size
        try:
            self.read_out(algo)  # the untrained policy
            while True:
                due = adaptive_cost if self.adaptive_due(self.iteration + 1) else 0.0
                step = last / self.n_clips + readout_cost + due
                if self.spent() + step + adaptive_cost > budget + 1e-9:
                    break
                if opts.max_iterations is not None and self.iteration >= opts.max_iterations:
                    break
                result = algo.train()
                self.iteration += 1
                now = _env_steps(result)
                last, self.steps = max(now - self.steps, 1), now
                self.read_out(algo)
            if not self.adaptive or self.adaptive[-1].iteration != self.iteration:
                self.read_out_adaptive()
            self.nodes = _runner_nodes(algo)
        finally:
            algo.stop()
        return self.result(t0)

    def read_out_adaptive(self) -> None:
        """Score the current clip-adaptive policy (already loaded) on the tuning clips."""
        from envs.heldout import clip_counts_of_events, macro_f

        problem = self.problem
        counts = clip_counts_of_events(problem.evaluator, self.policy.events(problem.tuning))
        weights = {k: v.clone() for k, v in self.policy.net.state_dict().items()}
        self.adaptive.append(_AdaptiveReadout(self.iteration, macro_f(counts), weights))
        LOG.info("rl iteration %d: clip-adaptive tuning F %.4f", self.iteration, self.adaptive[-1].f)

    def read_out(self, algo: Any) -> None:
        """Evaluate the current greedy policy's static table; record a trajectory point."""
        self.policy.load_rllib_state(_module_state(algo))
        actions = self.policy.actions(self.scores)
        params, f, mode_f = static_table(actions, self.grid, self.classes, self.cache, self.top_k)
        if self.adaptive_due(self.iteration):
            self.read_out_adaptive()
        evaluations = self.spent()
        self.readouts.append(_Readout(self.iteration, self.steps, f, mode_f, params))
        self.trajectory.add(evaluations, f)
        self.ctx.progress(evaluations)
        LOG.info("rl iteration %d: %d clips, %.2f evaluations, static-table tuning F %.4f (mode table %.4f)",
                 self.iteration, self.steps, evaluations, f, mode_f)

    def result(self, t0: float) -> StrategyResult:
        """The best read-out's table and policy (saved to the work directory)."""
        problem, policy = self.problem, self.policy
        best = max(self.readouts, key=lambda r: (np.nan_to_num(r.f, nan=-1.0), -r.iteration))
        adaptive = max(self.adaptive, key=lambda r: (np.nan_to_num(r.f, nan=-1.0), -r.iteration))
        untrained = AdaptivePolicy.create(self.grid, self.classes, self.n_frames_max, self.opts.hidden,
                                          self.opts.quantiles)
        untrained.net.load_state_dict(self.adaptive[0].weights)
        untrained.frame_hop_s = problem.tuning.frame_hop_s
        policy.net.load_state_dict(adaptive.weights)
        os.makedirs(self.ctx.workdir, exist_ok=True)
        path = os.path.join(self.ctx.workdir, "policy.pt")
        policy.save(path, problem.tuning.frame_hop_s)
        first, last = self.readouts[0], self.readouts[-1]
        return StrategyResult(
            strategy=RLStrategy.name,
            naive=dict(best.params),
            candidates=self.cache.candidates(),
            trajectory=list(self.trajectory.points),
            evaluations=self.spent(),
            wall_s=time.perf_counter() - t0,
            artifacts={"policy": path},
            adaptive=policy,
            adaptive_untrained=untrained,
            info={
                "untrained_f": first.f,
                "nodes": getattr(self, "nodes", []),
                "untrained_params": dict(first.params),
                "best_iteration": best.iteration,
                "adaptive_iteration": adaptive.iteration,
                "adaptive_f": [[r.iteration, r.f] for r in self.adaptive],
                "iterations": last.iteration,
                "env_steps": last.env_steps,
                "readout_evaluations": self.cache.evaluations + len(self.adaptive),
                "mode_table_f": [r.mode_f for r in self.readouts],
                "options": self.opts.model_dump(),
            },
        )


def _runner_nodes(algo: Any) -> list[str]:
    """Ray node ids of the remote EnvRunners (where the environment replicas ran)."""
    try:
        ids = algo.env_runner_group.foreach_env_runner(lambda _: current_node(), local_env_runner=False)
    except Exception:  # diagnostics only: never fail a run over it
        LOG.warning("rl: could not read the env runners' nodes", exc_info=True)
        return []
    return sorted(set(ids))


def _build(problem: TuningProblem, opts: RLOptions, seed: int, n_frames_max: int, grid: ActionGrid) -> Any:
    """The PPO ``Algorithm`` on replicas of the environment (Ray must be initialised)."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_replica_env)
    n_classes = len(problem.classes)
    config: Any = PPOConfig()  # type: ignore[no-untyped-call]
    config = (
        config.environment(
            env=ENV_NAME,
            env_config=env_config(problem, opts, n_frames_max),
            # Given here so that the driver never builds an environment (it holds no shard).
            observation_space=gym.spaces.Box(0.0, 1.0, (n_frames_max, n_classes), np.float32),
            action_space=gym.spaces.MultiDiscrete(grid.nvec),
        )
        .env_runners(
            num_env_runners=opts.num_env_runners,
            num_envs_per_env_runner=opts.num_envs_per_env_runner,
            num_cpus_per_env_runner=opts.num_cpus_per_env_runner,
            sample_timeout_s=opts.sample_timeout_s,
        )
        .training(
            gamma=opts.gamma,
            lambda_=opts.lambda_,
            lr=opts.lr,
            train_batch_size_per_learner=opts.train_batch_size,
            minibatch_size=min(opts.minibatch_size, opts.train_batch_size),
            num_epochs=opts.num_epochs,
            entropy_coeff=opts.entropy_coeff,
            clip_param=opts.clip_param,
        )
        .rl_module(rl_module_spec=RLModuleSpec(
            module_class=_policy_rl_module_class(),
            model_config={
                "hidden": list(opts.hidden),
                "quantiles": opts.quantiles,
                "prior_action": grid.nearest_action([problem.manual[c] for c in problem.classes]).tolist(),
                "prior_logit": opts.prior_logit,
            },
        ))
        .fault_tolerance(restart_failed_env_runners=True)
        .debugging(seed=seed)
    )
    return config.build_algo()


def _module_state(algo: Any) -> Mapping[str, Any]:
    """The learner's module weights (numpy arrays by parameter name)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    state: Mapping[str, Any] = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
    return state


def _env_steps(result: Mapping[str, Any]) -> int:
    """Env steps sampled so far (new API stack result layout)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
