"""What a job's results look like in MLflow: a plan of runs, made from the result directory.

Pure code (no MLflow import): :func:`load_result_dir` reads the files a job wrote, and
:func:`plan_job` turns them into a :class:`RunPlan` tree that :mod:`service.results.tracking` logs.

Layout (experiment = the job name, or ``tracking.experiment``, tagged
``mlflow.experimentKind = custom_model_development``, MLflow's "Machine learning" kind):

- **parent run** ``<job>-<job id>``: the resolved spec as flat params (``heldout.fraction``,
  ``strategies.random.budget``, ...); metrics of the recommended row (``heldout_f1``,
  ``heldout_gain_over_manual``, ``tuning_f1``) and of the manual setting
  (``manual_heldout_f1``, ``manual_tuning_f1``), ``wall_s``; artifacts ``spec.resolved.json``,
  ``comparison.json``, ``comparison.md``, ``best_params.json``, ``artifacts.json``, ``params/``
  and ``plots/``;
- **one child run per strategy** (tag ``strategy``): the per-class parameters of the job's
  selection (``comparison.json`` ``selection``; ``fixed`` for manual) as flat params
  ``<class>/<field>`` and every other selection prefixed (``naive.Dog/threshold``). Metrics, in
  the chart sections of the MLflow UI:

  - ``compare/`` (the first section): ``heldout_f1``, ``heldout_gain_over_manual`` with its
    95 % interval ``heldout_gain_ci95_low|high``, ``tuning_f1``, ``tuning_evaluations``,
    ``wall_s`` and the curve ``tuning_f1_curve`` (best tuning macro F1 so far; step =
    ceil(evaluations spent));
  - ``per_class/<part>/<class>/f1|precision|recall|n_ref|n_sys|n_tp`` (part ``tuning`` or
    ``heldout``; other selections ``per_class/naive.heldout/...``);
  - unprefixed ("Model metrics", the last section): ``heldout_f1_std``, ``tuning_f1_std``,
    ``heldout_gain_significant``, the manual reference ``manual_heldout_f1|manual_tuning_f1``
    and the other selections' figures (``naive.heldout_f1``, ...).

  Artifacts: its parameter files, its per-class F1 figure, its trials file and its own files
  (``rl/policy`` → ``policy/``);
- **trial runs** (children of their strategy's run) where ``trials.<strategy>.json`` exists:
  per-class params and the trial's tuning macro F1 ``tuning_f1`` (unprefixed). Hide them in
  the UI with the filter ``tags.sedtune.role != 'trial'``.

Every run carries the tags ``job``, ``job_id``, ``dataset_fingerprint``, ``seed``,
``sedtune.role`` (job, strategy or trial) and ``<package>_version`` (sedtune, ray, sed_eval,
...). Params hold nothing time-dependent, so a re-run with the same seed logs the same params.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from envs.errors import SedtuneInputError
from service.results.plots import curve_points, primary_rows

MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000
MAX_NAME_PART = 100
# The MLflow UI's chart view groups charts into sections by the metric name up to its last "/",
# orders the named sections by name and puts "Model metrics" (names without "/") last; charts
# within a section are ordered by name. So HEADLINE is the first section, and heldout_f1 its first
# chart; the per-class figures come after it, all under PER_CLASS.
HEADLINE = "compare"
PER_CLASS = "per_class"
CURVE_METRIC = f"{HEADLINE}/tuning_f1_curve"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow's "Machine learning" kind (not GenAI)
TRIAL_FILTER = "tags.sedtune.role != 'trial'"  # the MLflow search filter that hides trial runs
CLASS_FIGURES = (
    ("f_measure", "f1"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("nref", "n_ref"),
    ("nsys", "n_sys"),
    ("ntp", "n_tp"),
)


@dataclass
class RunPlan:
    """One MLflow run to create.

    Attributes:
        name: Run name.
        tags: Tags.
        params: Params (string values).
        metrics: ``(key, value, step)`` triples.
        artifacts: ``(local file or directory, artifact directory or None for the root)``.
        children: Runs nested under this one.
    """

    name: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    artifacts: list[tuple[str, str | None]] = field(default_factory=list)
    children: list[RunPlan] = field(default_factory=list)

    def count(self) -> int:
        """Runs in this tree."""
        return 1 + sum(c.count() for c in self.children)


@dataclass(frozen=True)
class ResultFiles:
    """The files of one job's result directory, parsed.

    Attributes:
        path: The result directory.
        comparison: ``comparison.json``.
        spec: ``spec.resolved.json``.
        artifacts: ``artifacts.json`` (name -> path as written by the job).
        trials: Per strategy, ``trials.<strategy>.json`` where present.
    """

    path: str
    comparison: dict[str, Any]
    spec: dict[str, Any]
    artifacts: dict[str, str]
    trials: dict[str, list[dict[str, Any]]]

    @property
    def job(self) -> str:
        """The job name."""
        return str(self.comparison.get("job") or self.spec.get("name") or "sedtune")


def _read_json(path: str, required: bool) -> Any:
    if not os.path.isfile(path):
        if required:
            raise SedtuneInputError(f"{path}: not found (is this a sedtune result directory?)")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SedtuneInputError(f"{path}: cannot read JSON: {e}") from e


def load_result_dir(result_dir: str) -> ResultFiles:
    """Read a job's result directory.

    Args:
        result_dir: Directory a job wrote (``comparison.json``, ``spec.resolved.json``, ...).

    Raises:
        SedtuneInputError: A required file is missing or malformed.
    """
    comparison = _read_json(os.path.join(result_dir, "comparison.json"), True)
    if not isinstance(comparison, dict) or not isinstance(comparison.get("rows"), list):
        raise SedtuneInputError(f"{result_dir}/comparison.json: no 'rows' list")
    spec = _read_json(os.path.join(result_dir, "spec.resolved.json"), True)
    artifacts = _read_json(os.path.join(result_dir, "artifacts.json"), False) or {}
    trials = {}
    for row in comparison["rows"]:
        s = row["strategy"]
        t = _read_json(os.path.join(result_dir, f"trials.{s}.json"), False)
        if isinstance(t, list):
            trials[s] = t
    return ResultFiles(result_dir, comparison, spec, artifacts, trials)


def _name(part: str) -> str:
    """One path component of a param or metric name, in MLflow's allowed characters."""
    s = re.sub(r"[^\w.\- ]", "_", str(part))[:MAX_NAME_PART]
    return "_" + s if s in ("", ".", "..") else s


def _value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flat ``a.b.c -> value`` params of a JSON object.

    Lists of objects that all have a distinct ``name`` are keyed by it
    (``strategies.random.budget``), other lists of objects by index; lists of scalars and empty
    containers are one JSON value.

    Args:
        obj: Parsed JSON.
        prefix: Key prefix.
    """
    if isinstance(obj, dict) and obj:
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{_name(k)}" if prefix else _name(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        names = [x.get("name") for x in obj]
        keyed = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        out = {}
        for i, x in enumerate(obj):
            out.update(flatten(x, f"{prefix}.{_name(names[i]) if keyed else i}"))
        return out
    return {prefix or "value": _value(obj)}


def class_params(params: dict[str, dict[str, Any]] | None, prefix: str = "") -> dict[str, str]:
    """Per-class parameters as ``[prefix.]<class>/<field>`` params.

    Args:
        params: Class -> parameter dict (``comparison.json`` row ``params``).
        prefix: Selection prefix (``naive``), or empty.
    """
    pre = f"{prefix}." if prefix else ""
    return {f"{pre}{_name(c)}/{_name(k)}": _value(v) for c, p in (params or {}).items() for k, v in p.items()}


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None if x is None else float(x)
    v = float(x)
    return v if math.isfinite(v) else None


def _summary(row: dict[str, Any]) -> list[tuple[str, Any]]:
    """The headline figures of a comparison row, by their names in :data:`HEADLINE`."""
    gain = row.get("gain_over_manual") or {}
    ci = gain.get("ci95") or [None, None]
    return [
        ("heldout_f1", row["heldout_f"]["mean"]),
        ("heldout_gain_over_manual", gain.get("mean")),
        ("heldout_gain_ci95_low", ci[0]),
        ("heldout_gain_ci95_high", ci[1]),
        ("tuning_f1", row["tuning_f"]["mean"]),
        ("tuning_evaluations", row.get("evaluations")),
        ("wall_s", row.get("wall_s")),
    ]


def _details(row: dict[str, Any]) -> list[tuple[str, Any]]:
    """The other whole-set figures of a comparison row (spread over splits, significance)."""
    return [
        ("heldout_f1_std", row["heldout_f"]["std"]),
        ("tuning_f1_std", row["tuning_f"]["std"]),
        ("heldout_gain_significant", (row.get("gain_over_manual") or {}).get("significant")),
    ]


def class_metrics(row: dict[str, Any], prefix: str = "") -> list[tuple[str, float, int]]:
    """Per-class figures of one comparison row: ``per_class/[prefix.]<part>/<class>/<figure>``.

    Args:
        row: ``comparison.json`` row.
        prefix: Selection prefix (``naive``), or empty.
    """
    pre = f"{prefix}." if prefix else ""
    pairs: list[tuple[str, Any]] = []
    for part in ("tuning", "heldout"):
        head = f"{PER_CLASS}/{pre}{part}"
        for c, figs in (row.get(f"{part}_class") or {}).items():
            pairs += [(f"{head}/{_name(c)}/{name}", figs.get(key)) for key, name in CLASS_FIGURES]
        if not row.get(f"{part}_class"):
            pairs += [(f"{head}/{_name(c)}/f1", f) for c, f in (row.get(f"{part}_class_f") or {}).items()]
    return [(k, v, 0) for k, x in pairs if (v := _num(x)) is not None]


def row_metrics(row: dict[str, Any], prefix: str = "") -> list[tuple[str, float, int]]:
    """The scores of one comparison row as metrics (step 0).

    The run's own selection (no prefix) puts its headline figures in :data:`HEADLINE`
    (``compare/heldout_f1``, ...) and the rest unprefixed (``heldout_f1_std``); another
    selection's are prefixed instead (``naive.heldout_f1``; no evaluations or wall time, which
    the selections of one strategy share). Per-class figures: :func:`class_metrics`.

    Args:
        row: ``comparison.json`` row.
        prefix: Selection prefix (``naive``), or empty.
    """
    if prefix:
        shared = ("tuning_evaluations", "wall_s")
        pairs = [(f"{prefix}.{k}", x) for k, x in _summary(row) + _details(row) if k not in shared]
    else:
        pairs = [(f"{HEADLINE}/{k}", x) for k, x in _summary(row)] + _details(row)
    out = [(k, v, 0) for k, x in pairs if (v := _num(x)) is not None]
    return out + class_metrics(row, prefix)


def _common_tags(files: ResultFiles, role: str) -> dict[str, str]:
    cmp = files.comparison
    tags = {
        "job": files.job,
        "job_id": str(cmp.get("job_id", "")),
        "dataset_fingerprint": str(cmp.get("dataset_fingerprint", "")),
        "seed": str(cmp.get("seed", "")),
        "sedtune.role": role,
    }
    for pkg, ver in sorted((cmp.get("versions") or {}).items()):
        tags[f"{_name(pkg)}_version"] = str(ver)
    return tags


def _manual_metrics(manual: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``manual_tuning_f1`` and ``manual_heldout_f1``: the reference on every run."""
    figures = dict(_summary(manual))
    return [(f"manual_{k}", v, 0) for k in ("tuning_f1", "heldout_f1") if (v := _num(figures[k])) is not None]


def local_artifact(files: ResultFiles, path: str) -> str | None:
    """Where a file named in ``artifacts.json`` is now (the directory may have moved).

    Args:
        files: The result directory.
        path: Path as written by the job.

    Returns:
        An existing path, or None.
    """
    if os.path.exists(path):
        return path
    written = files.spec.get("output")
    if written:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(written))
        moved = os.path.join(files.path, rel)
        if not rel.startswith("..") and os.path.exists(moved):
            return moved
    return None


def _strategy_plan(
    files: ResultFiles,
    rows: list[dict[str, Any]],
    primary: dict[str, Any],
    manual: dict[str, Any] | None,
    plots: dict[str, str],
    skipped: list[str],
) -> RunPlan:
    s = primary["strategy"]
    tags = _common_tags(files, "strategy") | {"strategy": s, "selection": primary["selection"]}
    params = {"selection": primary["selection"]}
    spec_entry = next((x for x in files.spec.get("strategies", []) if x.get("name") == s), None)
    if spec_entry is not None:
        params["budget"] = _value(spec_entry.get("budget"))
        params.update(
            {f"options.{k}": v for k, v in flatten(spec_entry.get("options") or {}).items() if k != "value"}
        )
    params.update(class_params(primary.get("params")))
    metrics = row_metrics(primary)
    if manual is not None:
        metrics += _manual_metrics(manual)
    metrics += [(CURVE_METRIC, f, step) for step, f in curve_points(primary.get("trajectory") or [])]
    artifacts: list[tuple[str, str | None]] = []
    for r in rows:
        if r is not primary:
            params.update(class_params(r.get("params"), _name(r["selection"])))
            metrics += row_metrics(r, _name(r["selection"]))
        pf = os.path.join(files.path, "params", f"{s}.{r['selection']}.json")
        if os.path.isfile(pf):
            artifacts.append((pf, "params"))
    if f"class_f1/{s}" in plots:
        artifacts.append((plots[f"class_f1/{s}"], "plots"))
    tf = os.path.join(files.path, f"trials.{s}.json")
    if os.path.isfile(tf):
        artifacts.append((tf, None))
    for key, path in sorted(files.artifacts.items()):
        head, _, name = key.partition("/")
        if head != s or not name:
            continue
        found = local_artifact(files, path)
        if found is None:
            skipped.append(f"{key} ({path}: not found)")
        else:
            artifacts.append((found, _name(name)))
    children = [_trial_plan(files, s, i, t) for i, t in enumerate(files.trials.get(s, []))]
    return RunPlan(s, tags, params, metrics, artifacts, children)


def _trial_plan(files: ResultFiles, strategy: str, i: int, trial: dict[str, Any]) -> RunPlan:
    index = trial.get("index", i)
    tags = _common_tags(files, "trial") | {"strategy": strategy, "trial_index": str(index)}
    metrics = [("tuning_f1", v, 0) for v in [_num(trial.get("f"))] if v is not None]
    name = f"{strategy}-trial-{index:04d}" if isinstance(index, int) else f"{strategy}-trial-{index}"
    return RunPlan(name, tags, {"trial_index": str(index)} | class_params(trial.get("params")), metrics)


def plan_job(files: ResultFiles, plots: dict[str, str]) -> tuple[RunPlan, list[str]]:
    """The runs to log for one job.

    Args:
        files: The result directory.
        plots: Figure paths from :func:`service.results.plots.write_plots` (may be empty).

    Returns:
        The parent run's plan (strategy runs and trial runs as children) and the artifacts
        named in ``artifacts.json`` that could not be found (left out).
    """
    cmp = files.comparison
    skipped: list[str] = []
    primaries = primary_rows(cmp)
    manual = next((r for r in primaries if r["strategy"] == "manual"), None)
    rec_key = str(cmp.get("recommended", ""))
    rec = next((r for r in cmp["rows"] if f"{r['strategy']}/{r['selection']}" == rec_key), None)
    tags = _common_tags(files, "job") | {"recommended": rec_key}
    md = os.path.join(files.path, "comparison.md")
    if os.path.isfile(md):
        with open(md, encoding="utf-8") as f:
            tags["mlflow.note.content"] = f.read()[:MAX_TAG_LEN]
    metrics: list[tuple[str, float, int]] = []
    if rec is not None:
        wanted = ("heldout_f1", "heldout_gain_over_manual", "tuning_f1")
        figures = dict(_summary(rec))
        metrics += [(k, v, 0) for k in wanted if (v := _num(figures[k])) is not None]
    if manual is not None:
        metrics += _manual_metrics(manual)
    metrics += [("wall_s", v, 0) for v in [_num(cmp.get("wall_s"))] if v is not None]
    artifacts: list[tuple[str, str | None]] = [
        (p, None)
        for n in (
            "spec.resolved.json",
            "comparison.json",
            "comparison.md",
            "best_params.json",
            "artifacts.json",
        )
        if os.path.isfile(p := os.path.join(files.path, n))
    ]
    if os.path.isdir(os.path.join(files.path, "params")):
        artifacts.append((os.path.join(files.path, "params"), "params"))
    artifacts += [(plots[k], "plots") for k in ("f1_vs_evaluations", "class_f1") if k in plots]
    children = []
    for primary in primaries:
        rows = [r for r in cmp["rows"] if r["strategy"] == primary["strategy"]]
        children.append(_strategy_plan(files, rows, primary, manual, plots, skipped))
    name = f"{files.job}-{cmp.get('job_id')}" if cmp.get("job_id") else files.job
    return RunPlan(name, tags, flatten(files.spec), metrics, artifacts, children), skipped
