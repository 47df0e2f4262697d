"""The rl strategy's Ray side: environment replicas, the RLlib module and the PPO algorithm.

Distribution. Every EnvRunner holds ``num_envs_per_env_runner`` replicas (with
``num_env_runners`` 0, the default, they sample in the driver: on a few cores the fastest);
each replica reads its own Parquet shard(s), chosen round-robin from its worker and vector
index (:func:`envs.gym_data.replica_shards`); ``env_config`` carries only URIs, shard paths,
clip names, the residual grid and numbers, never scores. RLlib's new stack hands every
sub-environment of an EnvRunner the same ``EnvContext`` (``vector_index`` 0: Ray 2.60's
``SingleAgentEnvRunner.make_env`` registers ``lambda: creator(env_ctx)`` with
``gym.make_vec``), so :func:`make_replica_env` numbers the replicas of its process itself.

The module holds the cross-fitted networks (:class:`~service.strategies.rl_policy.RoutedNets`
of :class:`~service.strategies.rl_policy.PolicyNet` and
:class:`~service.strategies.rl_policy.ValueNet`): each sample trains the network its route
names, never the one its clip is held out from.

Ray is imported inside the functions only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.action_grid import ResidualGrid
from envs.evaluator import MetricConfig
from envs.gym_data import FEATURE_BOUND, feature_names, replica_shards
from envs.gym_env import ResidualEnv
from envs.problem import DataRef, TuningProblem
from envs.scoreset import ScoreSet
from service.strategies.base import current_node
from service.strategies.options import RLOptions
from service.strategies.rl_policy import PolicyNet, RoutedNets, ValueNet

LOG = logging.getLogger(__name__)

ENV_NAME = "sedtune-postprocessing"

# Replicas created so far in this process, per worker index (see make_replica_env).
_REPLICAS_MADE: dict[int, int] = {}


def make_replica_env(ctx: Mapping[str, Any]) -> ResidualEnv:
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
    return ResidualEnv.from_shards(
        data,
        mine,
        ResidualGrid.from_json(ctx["grid"]),
        MetricConfig(**ctx["metric"]),
        shard_paths=ctx["shard_paths"],
        holdout=dict(zip(ctx["clips"], ctx["holdout"], strict=True)),
        n_nets=int(ctx["n_nets"]),
        episode_clips=int(ctx["episode_clips"]),
    )


def env_config(
    problem: TuningProblem, opts: RLOptions, grid: ResidualGrid, holdout: np.ndarray, n_nets: int
) -> dict[str, Any]:
    """What replicas need to read their own shards and build their tables: URIs, shard paths,
    clip names, each clip's held-out network, the residual grid, numbers."""
    ref = problem.data
    scores = ScoreSet.open(ref.scores)
    wanted = set(problem.tuning.filenames)
    # Shards without any tuning clip would leave a replica without data.
    eligible = [i for i, s in enumerate(scores.shards) if any(n in wanted for n in s.filenames)]
    return {
        "scores": ref.scores,
        "ground_truth": ref.ground_truth,
        "durations": ref.durations,
        "clips": list(problem.tuning.filenames),
        "holdout": [int(h) for h in holdout],
        "classes": list(problem.classes),
        "shard_paths": [s.path for s in scores.shards],
        "shards": eligible,
        "grid": grid.to_json(),
        "metric": {"t_collar_s": problem.metric.t_collar_s,
                   "percentage_of_length": problem.metric.percentage_of_length,
                   "segment_s": problem.metric.segment_s},
        "n_nets": n_nets,
        "episode_clips": opts.episode_clips,
        "num_envs_per_env_runner": opts.num_envs_per_env_runner,
    }


_MODULE_CLASS: type | None = None


def _policy_rl_module_class() -> type:
    """The RLlib module class (built on first use so that importing this file needs no Ray)."""
    global _MODULE_CLASS
    if _MODULE_CLASS is not None:
        return _MODULE_CLASS
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    class PolicyRLModule(TorchRLModule, ValueFunctionAPI):  # type: ignore[misc]
        """Routed PolicyNets (actors) and ValueNets (critics) for PPO; the actors get exported."""

        def setup(self) -> None:
            cfg: Any = self.model_config
            k = int(cfg["n_nets"])
            n_features = int(cfg["n_features"])
            action_space: Any = self.action_space
            n_actions = int(action_space.n)
            self.pi = RoutedNets([PolicyNet(n_features, n_actions, cfg["hidden"], cfg["base_action"],
                                            cfg["prior_logit"]) for _ in range(k)])
            self.vf = RoutedNets([ValueNet(n_features, cfg["value_hidden"]) for _ in range(k)])
            self.action_dist_cls = TorchCategorical

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


def runner_nodes(algo: Any) -> list[str]:
    """Ray node ids of the remote EnvRunners (where the environment replicas ran)."""
    try:
        ids = algo.env_runner_group.foreach_env_runner(lambda _: current_node(), local_env_runner=False)
    except Exception:  # diagnostics only: never fail a run over it
        LOG.warning("rl: could not read the env runners' nodes", exc_info=True)
        return []
    return sorted(set(ids))


def build_algorithm(
    problem: TuningProblem,
    opts: RLOptions,
    seed: int,
    grid: ResidualGrid,
    holdout: np.ndarray,
    n_nets: int,
    batch_size: int,
) -> Any:
    """The PPO ``Algorithm`` on replicas of the environment (Ray must be initialised).

    Args:
        problem: The tuning problem.
        opts: The options.
        seed: Seed of sampling and initialisation.
        grid: The residual grid.
        holdout: Per tuning clip, its held-out network.
        n_nets: Cross-fitted networks.
        batch_size: Env steps per training iteration.
    """
    import gymnasium as gym
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_replica_env)
    n_features = len(feature_names(problem.classes))
    config: Any = PPOConfig()  # type: ignore[no-untyped-call]
    config = (
        config.environment(
            env=ENV_NAME,
            env_config=env_config(problem, opts, grid, holdout, n_nets),
            # Given here so that the driver builds no environment of its own.
            observation_space=gym.spaces.Box(
                -FEATURE_BOUND, FEATURE_BOUND, (n_nets + n_features,), np.float32
            ),
            action_space=gym.spaces.Discrete(grid.n_actions),
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
            train_batch_size_per_learner=batch_size,
            minibatch_size=min(opts.minibatch_size, batch_size),
            num_epochs=opts.num_epochs,
            entropy_coeff=opts.entropy_coeff,
            clip_param=opts.clip_param,
        )
        .rl_module(rl_module_spec=RLModuleSpec(
            module_class=_policy_rl_module_class(),
            model_config={
                "n_nets": n_nets,
                "n_features": n_features,
                "hidden": list(opts.hidden),
                "value_hidden": list(opts.value_hidden),
                "base_action": grid.base_action,
                "prior_logit": opts.prior_logit,
            },
        ))
        .fault_tolerance(restart_failed_env_runners=True)
        .debugging(seed=seed)
    )
    return config.build_algo()


def module_state(algo: Any) -> Mapping[str, Any]:
    """The learner's module weights (numpy arrays by parameter name)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    state: Mapping[str, Any] = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
    return state


def env_steps(result: Mapping[str, Any]) -> int:
    """Env steps sampled so far (new API stack result layout)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
