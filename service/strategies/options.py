"""Every strategy's options and budget rule, importable without Ray, torch, MLflow or Optuna.

The job spec (:mod:`service.tuning.spec`) types each strategy entry's ``options`` with the
model here, so a spec is validated, and the published API documents every option, without
importing a strategy. Each model also owns its strategy's budget rule
(:meth:`StrategyOptions.budget_error`), which :func:`service.tuning.check.check_job` and the
service's :func:`service.server.policy.check_options` apply before any Ray work.

Budgets are in full-set evaluations (:mod:`service.strategies.base`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from envs.errors import SedtuneInputError
from envs.params import class_params_from_json

#: A Tune search stops when this many trials have failed (after retries) and none succeeded:
#: the failure is systematic (unreadable data on the workers, a bug), not a flaky worker.
SYSTEMATIC_FAILURES = 3
#: The smallest budget of an rl run that counts its read-outs (full-set evaluations): its static
#: table (the manual setting's evaluation, 1, when no exact sweep fits the budget) and the
#: cross-validated evaluation of its clip-adaptive policy (1).
RL_MIN_BUDGET = 2.0

#: A warm start: a parameter-file path, or inline ``{class: {field: value}}``.
WarmStart = str | dict[str, dict[str, Any]]


class StrategyOptions(BaseModel):
    """Options of a strategy: unknown names are refused; no budget rule by default.

    Class attributes (read by the job spec, which types each strategy entry by its name):
        summary: What the strategy does, one line (the entry's description in the OpenAPI).
        budget_doc: What its budget means and its rule, after "full-set evaluations (...);".
    """

    model_config = ConfigDict(extra="forbid")
    summary: ClassVar[str] = ""
    budget_doc: ClassVar[str] = ""

    def budget_error(self, budget: float | None, n_settings: int) -> str | None:
        """Why the strategy cannot run with ``budget``, or None if it can.

        Args:
            budget: Full-set evaluations allowed (None: the strategy's default).
            n_settings: Discrete settings per class of the job's space (``SearchSpace.settings``).

        Returns:
            The rule and the value, one line without the field path (the caller adds
            ``strategies[i].budget``), or None.
        """
        return None


class ManualOptions(StrategyOptions):
    """The manual strategy has no options; it spends 1 full-set evaluation whatever the budget."""

    summary = "The manual setting, evaluated once: the reference every other strategy is measured against."
    budget_doc = "ignored: manual spends 1"


class ExactOptions(StrategyOptions):
    """Options of the exact strategy (per (class, setting) exact threshold sweeps)."""

    summary = "Per class and setting, the exact threshold sweep (the optimum on the grid)."
    budget_doc = (
        "at least one per setting of the space, which then get floor(budget / settings) thresholds "
        "each; none: every threshold at which a decision changes"
    )

    max_candidates_per_setting: int = Field(
        default=400,
        ge=2,
        description="thresholds kept per (class, setting) as candidates for robust selection, count "
        "(an even subsample plus the best threshold when a sweep finds more decisions)",
    )
    classes_cached_per_worker: int = Field(
        default=2, ge=1, description="class score columns a sweep worker keeps in memory, count"
    )

    def budget_error(self, budget: float | None, n_settings: int) -> str | None:
        """Exact sweeps every setting: the budget must give each one threshold at least."""
        if budget is not None and budget < n_settings:
            return (
                f"exact needs at least one threshold per setting, so budget must be >= {n_settings}, "
                f"but got {budget}"
            )
        return None


class TuneOptions(StrategyOptions):
    """Options shared by the Tune strategies (random and bayes); one trial is one evaluation."""

    cpus_per_trial: float = Field(
        default=1.0, gt=0, description="CPUs Ray reserves per trial (one evaluation is single-threaded)"
    )
    max_failures: int = Field(
        default=3,
        ge=0,
        description="retries of a failed trial (e.g. its worker died), count; a trial failing every "
        "retry is counted as failed and the search goes on, unless the first "
        f"{SYSTEMATIC_FAILURES} finished trials all failed: then it stops",
    )
    reuse_actors: bool = Field(
        default=True,
        description="run trial after trial in the same worker process (about 0.25 s per trial instead "
        "of about 1 s); off, every trial gets a fresh worker, placed wherever the cluster has a free "
        "CPU at that moment",
    )
    fault_marker: str | None = Field(
        default=None,
        description="test only, leave unset (the service refuses it): the first trial that finds no "
        "file at this path creates it and kills its worker process, to exercise retries",
    )

    def budget_error(self, budget: float | None, n_settings: int) -> str | None:
        """A Tune search runs one trial (one full-set evaluation) at least."""
        if budget is not None and not budget >= 1:
            return f"a Tune search needs one trial at least, so budget must be >= 1, but got {budget}"
        return None


class RandomOptions(TuneOptions):
    """Options of the random strategy."""

    summary = "Random search over the joint per-class space (Ray Tune)."
    budget_doc = "one per Tune trial, at least 1; none: 100 trials"

    max_concurrent_trials: int | None = Field(
        default=None,
        ge=1,
        description="trials running at once, count; none: all CPUs of the cluster but one, divided "
        "by cpus_per_trial. The result does not depend on it",
    )


class BayesOptions(TuneOptions):
    """Options of the bayes strategy (Optuna TPE)."""

    summary = "Optuna TPE over the joint per-class space (Ray Tune)."
    budget_doc = "one per Tune trial, at least 1; none: 100 trials"

    max_concurrent_trials: int = Field(
        default=1,
        ge=1,
        description="trials running at once, count; 1 keeps TPE deterministic for a seed, more is "
        "faster on a cluster but suggestions then depend on completion order",
    )
    warm_start: WarmStart | None = Field(
        default=None,
        description="a configuration evaluated first: a sedtune parameter file (path; same frame hop "
        'as the scores) or inline {class: {"threshold": ..., "median_filter_frames": ...}} (any '
        "fields of a parameter file's class entry, decoder included). Classes it leaves out take the "
        "manual setting; values outside the space are snapped into it",
    )
    include_manual: bool = Field(
        default=True,
        description="evaluate the manual setting first (before warm_start); it counts toward the budget",
    )
    n_startup_trials: int = Field(
        default=10,
        ge=0,
        description="trials TPE samples at random (warm-start points included) before it models the "
        "objective, count",
    )

    @field_validator("warm_start")
    @classmethod
    def _check_inline(cls, v: WarmStart | None) -> WarmStart | None:
        # A path is checked at run time: a nightly retune names a file written later.
        if isinstance(v, dict):
            if not v:
                raise ValueError("must name at least one class")
            for label, entry in v.items():
                try:
                    class_params_from_json(entry, f"class {label!r}")
                except SedtuneInputError as e:
                    raise ValueError(str(e)) from None
        return v


class RLOptions(StrategyOptions):
    """Options of the rl strategy (PPO on Ray RLlib, residual to a static table); logged verbatim."""

    summary = (
        "A static table by an exact sweep, then PPO (Ray RLlib) learns per-clip changes to it, kept per "
        "class only where they win in cross-validation."
    )
    budget_doc = (
        "the exact sweep of the static table (static_share of the budget), env steps / (tuning clips x "
        "classes) and the cross-validated read-out (with options.count_readouts, at least 2); none: "
        "options.default_budget"
    )

    static_share: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="share of the budget for the exact sweep of the static table (floor(share x budget / "
        "settings) thresholds per setting; the table is its robust selection); the rest, and what the "
        "sweep leaves, trains the residual policy. Below one threshold per setting the table is the "
        "manual setting",
    )
    alternatives: int = Field(
        default=1,
        ge=1,
        description="settings per class the policy may switch to, count: the table's, then the class's best "
        "other settings of the sweep (another decoder, step filter, merge criterion, kernel)",
    )
    max_offset: int = Field(
        default=2, ge=0, description="threshold offsets: -max_offset..max_offset steps of offset_step_logit"
    )
    offset_step_logit: float = Field(
        default=0.5, gt=0, description="step of a threshold offset, logit units (0.5 moves 0.5 to 0.62)"
    )
    cv_nets: int = Field(
        default=5,
        ge=2,
        description="cross-fitted policy networks, count (at most the job's folds): clips of fold f are held "
        "out from network f mod cv_nets, which scores them in the gate; applied to new clips, their mean "
        "logits. More networks see more of the clips each (measured on dcase2020-baseline with full "
        "information: 2 networks on halves gained a third of what one network on all clips did, 5 most "
        "of it)",
    )
    gate_confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1,
        description="the clip-adaptive policy replaces the table only where it wins in cross-validation "
        "with this probability (paired bootstrap over the tuning clips): a class adapts if its own gain "
        "is positive and either the whole policy's macro-F gain is positive with this probability or its "
        "own with probability 1 - (1 - this) / classes",
    )
    lr: float = Field(
        default=1e-2,
        gt=0,
        description="Adam learning rate (measured on dcase2020-baseline, 5 splits: at 3e-3 the networks "
        "gained about half of what full-information training of the same policy did; at 1e-2 as much)",
    )
    episode_clips: int = Field(
        default=32, ge=1, description="clips per episode (one env step per (clip, class))"
    )
    num_env_runners: int = Field(
        default=0, ge=0, description="EnvRunner actors (0: sample in the driver, the fastest on a few cores)"
    )
    num_envs_per_env_runner: int = Field(default=16, ge=1, description="environment replicas per EnvRunner")
    num_cpus_per_env_runner: float = Field(
        default=0.5, ge=0, description="CPUs Ray reserves per EnvRunner (fractions allowed)"
    )
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(),
        description="hidden layer sizes (units) of the policy networks; empty: linear in the clip features "
        "(measured on the DESED sets: hidden layers fit the tuning clips and lose on held-out clips)",
    )
    value_hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(64,), description="hidden layer sizes (units) of the value networks (the PPO baseline)"
    )
    train_batch_size: int = Field(
        default=4096, ge=1, description="env steps ((clip, class) decisions) per training iteration"
    )
    minibatch_size: int = Field(default=1024, ge=1, description="SGD minibatch size (env steps)")
    num_epochs: int = Field(default=8, ge=1, description="passes over each training batch")
    gamma: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="discount per step; a step's reward is its whole effect (decisions do not interact to "
        "first order), so 0 is exact",
    )
    lambda_: float = Field(default=0.0, ge=0, le=1, description="GAE lambda (irrelevant with gamma 0)")
    entropy_coeff: float = Field(
        default=0.0,
        ge=0,
        description="entropy bonus coefficient of the PPO loss (the small reward differences of most "
        "decisions drown in any bonus)",
    )
    clip_param: float = Field(default=0.2, gt=0, description="PPO ratio clip")
    count_readouts: bool = Field(
        default=True,
        description="count the read-outs against the budget: the manual table's evaluation when there is "
        "no sweep (1) and the cross-validated evaluation of the clip-adaptive policy (1)",
    )
    default_budget: float = Field(
        default=100.0, gt=0, description="full-set evaluations when the job gives no budget"
    )
    max_iterations: int | None = Field(
        default=None, ge=1, description="stop after this many training iterations (none: the budget only)"
    )
    sample_timeout_s: float = Field(
        default=120.0, gt=0, description="seconds an EnvRunner may take for one sample call"
    )
    learner_threads: int = Field(
        default=1,
        ge=1,
        description="torch threads of the driver-side learner while training; the networks are tiny, "
        "and more threads only contend with the samplers",
    )
    prior_logit: float = Field(
        default=0.5,
        gt=0,
        description="the untrained networks' logit of the base action (the table) over the others: the "
        "untrained policy is the table on every clip (their last layer starts at 0), and sampling tries "
        "the other actions (with 5 actions and 0.5: 71 percent of the samples; with 2, 35 percent, "
        "learned less in the same steps)",
    )

    def budget_error(self, budget: float | None, n_settings: int) -> str | None:
        """Counted read-outs: the static table's and the gate's must fit (:data:`RL_MIN_BUDGET`)."""
        given = budget if budget is not None else self.default_budget
        if self.count_readouts and given < RL_MIN_BUDGET:
            which = "budget" if budget is not None else "options.default_budget (the job gives no budget)"
            return (
                "rl counts its read-outs, and its static table (1 without a sweep) and the "
                f"cross-validated evaluation of its clip-adaptive policy (1) must fit, so {which} must "
                f"be >= {RL_MIN_BUDGET:g}, but got {given}"
            )
        return None


#: The options model of every strategy, by name, in the order the docs list them. The job spec
#: types its strategy entries from this (one entry model per name).
OPTIONS: dict[str, type[StrategyOptions]] = {
    "manual": ManualOptions,
    "exact": ExactOptions,
    "random": RandomOptions,
    "bayes": BayesOptions,
    "rl": RLOptions,
}
