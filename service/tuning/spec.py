"""The job spec: YAML or JSON, validated with field-path errors before any Ray work.

Example (every field but ``name``, ``data`` and ``strategies`` has a default)::

    name: desed-student
    data: {scores: scores/, ground_truth: ground_truth.tsv, durations: durations.tsv}
    heldout: {fraction: 0.5, seed: 0, splits: 1}      # or heldout: {data: {...}} for a separate set
    metric: {t_collar_s: 0.2, percentage_of_length: 0.2}
    space: {decoders: [frames, boxes], kernels: [1, 7, 13],   # frames: median filters
            threshold: {low: 0.01, high: 0.99}, fill_gap_s: [0.0], min_duration_s: [0.0],
            boxes: {kernels: [1], step_filter_s: [0.32, 0.48, 0.64],
                    merge: [{abs: 0.15}, {abs: 0.2}, {abs: 0.3}, {abs: 0.4},
                            {rel: 1.5}, {rel: 2.0}, {rel: 3.0}, {rel: 5.0}],
                    confidence: [mean]}}
    manual: {threshold: 0.5, median_filter_s: 0.45}
    strategies:
      - {name: manual}
      - {name: exact}
      - {name: random, budget: 200}
      - {name: bayes, budget: 200}
      - {name: rl, budget: 200}
    selection: robust          # or naive
    seed: 0
    output: sedtune-out/desed-student

Each strategy entry is typed by its name (:data:`StrategySpec`), so its ``options`` are
validated here with the model of :mod:`service.strategies.options` (no Ray or torch is
imported). Structural errors name the field path (``strategies[2].budget: ...``,
``strategies[1].options.lr: ...``); semantic checks (files exist, classes known, each
strategy's budget rule) are made by :func:`service.tuning.check.check_job` with the same paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)

from envs.errors import SedtuneInputError
from envs.params import MAX_STEP_FILTER_S
from envs.space import (
    DEFAULT_BOX_CONFIDENCE,
    DEFAULT_BOX_KERNELS,
    DEFAULT_BOX_MERGE,
    DEFAULT_BOX_STEP_FILTER_S,
    DEFAULT_FRAME_KERNELS,
    SearchSpace,
)
from service.strategies.options import OPTIONS, StrategyOptions

# A budget is full-set evaluations; 100000 is days of search on any set a job can hold.
MAX_BUDGET = 100_000.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Model):
    """Where the scores and the ground truth are."""

    scores: str = Field(min_length=1, description="score-set directory or URI")
    ground_truth: str = Field(min_length=1, description="DCASE ground-truth TSV")
    durations: str | None = Field(default=None, description="durations TSV")
    classes: list[str] | None = Field(default=None, description="restrict tuning to these classes")


class HeldoutSpec(_Model):
    """How clips are split into tuning and held-out parts (seeded, over the clips in name order)."""

    fraction: float = Field(default=0.5, gt=0.0, lt=1.0, description="held-out fraction of clips")
    seed: int = Field(default=0, description="seed of the first split")
    splits: int = Field(default=1, ge=1, le=50, description="seeded splits (seed, seed+1, ...)")
    data: DataSpec | None = Field(default=None, description="a separate held-out set instead")


class MetricSpec(_Model):
    """Collars of the event-based metric."""

    t_collar_s: float = Field(default=0.2, gt=0.0, description="onset/offset collar (s)")
    percentage_of_length: float = Field(default=0.2, ge=0.0, le=1.0)


class ThresholdRange(_Model):
    """Threshold search range."""

    low: float = Field(default=0.01, gt=0.0, lt=1.0)
    high: float = Field(default=0.99, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdRange:
        if not self.low < self.high:
            raise ValueError(f"`low < high` must hold, but got (low={self.low}, high={self.high})")
        return self


class MergeSpec(_Model):
    """One merge criterion of the boxes decoder (either part null = off)."""

    abs: float | None = Field(default=None, gt=0.0, le=1.0, description="merge when peak - dip < abs")
    rel: float | None = Field(default=None, gt=1.0, description="merge when peak / dip < rel")


class BoxSpaceSpec(_Model):
    """The boxes decoder's part of the space (see envs/boxes.py)."""

    kernels: list[int] = Field(
        default_factory=lambda: list(DEFAULT_BOX_KERNELS), min_length=1, description="median filter, frames"
    )
    step_filter_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_BOX_STEP_FILTER_S), min_length=1, description="step filter (s)"
    )
    merge: list[MergeSpec] = Field(
        default_factory=lambda: [MergeSpec(abs=a, rel=r) for a, r in DEFAULT_BOX_MERGE], min_length=1
    )
    confidence: list[Literal["mean", "max"]] = Field(
        default_factory=lambda: list(DEFAULT_BOX_CONFIDENCE),  # type: ignore[arg-type]
        min_length=1,
        description="box confidence kinds",
    )

    @field_validator("kernels")
    @classmethod
    def _odd(cls, v: list[int]) -> list[int]:
        return _odd_kernels(v)

    @field_validator("step_filter_s")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        for i, x in enumerate(v):
            if not 0 < x <= MAX_STEP_FILTER_S:
                raise ValueError(f"item [{i}] must be in (0, {MAX_STEP_FILTER_S}] seconds, but got {x}")
        return v


def _odd_kernels(v: list[int]) -> list[int]:
    for i, k in enumerate(v):
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernels[{i}] must be an odd integer >= 1, but got {k}")
    if len(set(v)) != len(v):
        raise ValueError(f"kernels must be unique, but got {v}")
    return v


class SpaceSpec(_Model):
    """Per-class search space (both decoders by default)."""

    decoders: list[Literal["frames", "boxes"]] = Field(
        default_factory=lambda: ["frames", "boxes"], min_length=1, description="decoders searched"  # type: ignore[arg-type]
    )
    kernels: list[int] = Field(
        default_factory=lambda: list(DEFAULT_FRAME_KERNELS), min_length=1, description="frames: median filter"
    )
    threshold: ThresholdRange = Field(default_factory=ThresholdRange)
    fill_gap_s: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    min_duration_s: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    threshold_step: float = Field(default=0.05, gt=0.0, lt=1.0)
    boxes: BoxSpaceSpec = Field(default_factory=BoxSpaceSpec)

    @field_validator("kernels")
    @classmethod
    def _odd(cls, v: list[int]) -> list[int]:
        return _odd_kernels(v)

    @field_validator("decoders")
    @classmethod
    def _unique_decoders(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"decoders must be unique, but got {v}")
        return v

    @field_validator("fill_gap_s", "min_duration_s")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        for i, x in enumerate(v):
            if x < 0:
                raise ValueError(f"item [{i}] must be >= 0, but got {x}")
        return v

    def to_space(self) -> SearchSpace:
        """As the domain object."""
        return SearchSpace(
            kernels=tuple(self.kernels),
            threshold_low=self.threshold.low,
            threshold_high=self.threshold.high,
            fill_gap_s=tuple(self.fill_gap_s),
            min_duration_s=tuple(self.min_duration_s),
            threshold_step=self.threshold_step,
            decoders=tuple(self.decoders),
            box_kernels=tuple(self.boxes.kernels),
            box_step_filter_s=tuple(self.boxes.step_filter_s),
            box_merge=tuple((m.abs, m.rel) for m in self.boxes.merge),
            box_confidence=tuple(self.boxes.confidence),
        )


class ManualSpec(_Model):
    """The manual reference setting (DCASE baseline by default)."""

    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    median_filter_s: float = Field(default=0.45, ge=0.0, description="filter length (s), odd frames")


def _budget(description: str) -> Any:
    """The ``budget`` field of a strategy entry: full-set evaluations, finite, at most MAX_BUDGET."""
    return Field(
        default=None,
        gt=0.0,
        le=MAX_BUDGET,
        allow_inf_nan=False,
        description=f"full-set evaluations (finite, at most {MAX_BUDGET:g}); {description}",
    )


class StrategyEntry(_Model):
    """One strategy of the job: its name, budget and options (typed by the name)."""

    name: str
    budget: float | None = None
    options: StrategyOptions = Field(default_factory=StrategyOptions)


def _entry_model(name: str, options: type[StrategyOptions]) -> type[StrategyEntry]:
    """The entry model of one strategy: ``name`` fixed, its budget rule and options documented."""
    model = create_model(
        f"{name.capitalize()}StrategySpec",
        __base__=StrategyEntry,
        __doc__=options.summary or f"The {name} strategy.",
        name=(Literal[name], Field(description="the strategy")),  # type: ignore[valid-type,arg-type]
        budget=(float | None, _budget(options.budget_doc)),
        options=(options, Field(default_factory=options, description=f"options of the {name} strategy")),
    )
    return model


#: The entry model of every strategy, by name (from :data:`service.strategies.options.OPTIONS`).
ENTRY_MODELS: dict[str, type[StrategyEntry]] = {n: _entry_model(n, o) for n, o in OPTIONS.items()}


#: A strategy entry's name alone: a missing or unknown name is refused as ``strategies[i].name``.
_Named = create_model(
    "_Named",
    __base__=BaseModel,
    name=(Literal[tuple(ENTRY_MODELS)], ...),  # type: ignore[valid-type,arg-type]
)


def _known_name(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Refuse a missing or unknown strategy name as ``strategies[i].name`` (not as a union tag)."""
    if isinstance(value, dict):
        _Named.model_validate({k: v for k, v in value.items() if k == "name"})
    return handler(value)


if TYPE_CHECKING:
    StrategySpec = StrategyEntry
else:
    #: One strategy of the job: the entry model of its name (each with its own ``options`` model).
    StrategySpec = Annotated[
        Union[tuple(ENTRY_MODELS.values())],  # noqa: UP007 - a union built from the registry
        Field(discriminator="name"),
        WrapValidator(_known_name),
    ]


class ResourcesSpec(_Model):
    """Ray resources."""

    address: str | None = Field(default=None, description="Ray address; None starts local Ray")
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs for a local Ray")
    max_concurrent_trials: int = Field(default=2, ge=1)


class TrackingSpec(_Model):
    """MLflow tracking."""

    enabled: bool = True
    uri: str | None = Field(default=None, description="tracking URI; default sqlite:///mlflow.db")
    experiment: str | None = Field(default=None, description="experiment name; default the job name")


class JobSpec(_Model):
    """A tuning job."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    data: DataSpec
    heldout: HeldoutSpec = Field(default_factory=HeldoutSpec)
    metric: MetricSpec = Field(default_factory=MetricSpec)
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    manual: ManualSpec = Field(default_factory=ManualSpec)
    strategies: list[StrategySpec] = Field(min_length=1)
    selection: Literal["robust", "naive"] = "robust"
    folds: int = Field(default=5, ge=2, le=20, description="cross-validation folds of tuning clips")
    bootstrap: int = Field(default=1000, ge=100, le=100000, description="bootstrap resamples")
    seed: int = 0
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    output: str | None = Field(default=None, description="output directory; default sedtune-out/<name>")

    @field_validator("strategies")
    @classmethod
    def _unique(cls, v: list[StrategySpec]) -> list[StrategySpec]:
        names = [s.name for s in v]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ValueError(f"strategy {n!r} is listed twice (item [{i}])")
        return v

    @property
    def output_dir(self) -> str:
        """Where results go."""
        return self.output or os.path.join("sedtune-out", self.name)

    def with_absolute_paths(self) -> JobSpec:
        """The spec with local data and output paths absolute (URIs unchanged).

        Ray workers do not share the driver's working directory (Tune trials run in their
        trial directories), so a relative path that works in the driver would not be found
        there; every path is resolved against the driver's working directory once.
        """

        def data(d: DataSpec | None) -> DataSpec | None:
            if d is None:
                return None
            paths = ("scores", "ground_truth", "durations")
            return d.model_copy(update={k: _absolute(getattr(d, k)) for k in paths})

        heldout = self.heldout.model_copy(update={"data": data(self.heldout.data)})
        update = {"data": data(self.data), "heldout": heldout, "output": _absolute(self.output_dir)}
        return self.model_copy(update=update)


def _absolute(path: str | None) -> str | None:
    """A local path made absolute; URIs (``scheme://…``) and None unchanged."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


def field_path(loc: Sequence[object], empty: str = "spec") -> str:
    """A pydantic error location as a field path: ``strategies[1].budget``.

    The union tag pydantic puts after a strategy entry's index (``strategies.1.exact.budget``)
    is left out: the path names the entry's field.

    Args:
        loc: The location parts (names and list indices).
        empty: What an empty location is called.
    """
    out = ""
    for j, part in enumerate(loc):
        if j == 2 and loc[0] == "strategies" and isinstance(loc[1], int) and part in ENTRY_MODELS:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or empty


def validation_message(err: ValidationError, source: str) -> str:
    """One line naming the first failing field path and the rule."""
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {field_path(first['loc'])}: {msg}{extra}"


def parse_spec(obj: object, source: str = "spec") -> JobSpec:
    """Validate a parsed spec.

    Raises:
        SedtuneInputError: With the field path of the first problem.
    """
    if not isinstance(obj, dict):
        raise SedtuneInputError(f"{source}: the spec must be a mapping, got {type(obj).__name__}")
    try:
        return JobSpec.model_validate(obj)
    except ValidationError as e:
        raise SedtuneInputError(validation_message(e, source)) from None


def load_spec(path: str) -> JobSpec:
    """Read a YAML or JSON spec file (structural validation only; see :func:`check_job`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SedtuneInputError(f"{path}: spec file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise SedtuneInputError(f"{path}: cannot read the spec ({e})") from None
    try:
        obj = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SedtuneInputError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({e})".replace("\n", " ")
        ) from None
    return parse_spec(obj, path)
