"""MLflow tracking of a job: one path for online logging and for ``sedtune log``.

:func:`log_results` reads only the files of a result directory (layout and names in
:mod:`service.results.tracking_layout`), writes the figures into ``<dir>/plots/``, checks that the
tracking server answers (a short HTTP probe, so an unreachable server costs seconds, not the
client's minutes of retries), and logs the runs with :class:`mlflow.MlflowClient` against an
explicit tracking URI (no global MLflow state, so it also works inside Ray workers on other
nodes). :func:`try_log` wraps it for the job pipeline and never raises: it returns the one line
to print, ``tracked: ...`` or ``tracking failed: ...; results are in DIR; re-log with ...``.

The experiment is created with the tag ``mlflow.experimentKind = custom_model_development``
(MLflow's "Machine learning" kind; an existing experiment without a kind gets it too). MLflow
3.17's UI picks an experiment's first page by the browser's GenAI / Machine learning switch
rather than by that tag, so the links this module reports (:attr:`TrackingReport.experiment_url`)
name the Machine learning view: they open on the runs table, not the GenAI overview.

Tracking URI: the given one, else ``$MLFLOW_TRACKING_URI``, else an SQLite store
``sqlite:///<abs path of ./mlflow.db>`` (artifacts next to it in ``mlartifacts/``). MLflow is
imported lazily, only here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from service.results.tracking_layout import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MAX_TAG_LEN,
    ResultFiles,
    RunPlan,
    load_result_dir,
    local_artifact,
    plan_job,
)

LOG = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
PROBE_TIMEOUT_S = 10.0  # a refused connection fails at once; a loaded live server may be slow
MAX_LINE_REASON = 300
# MLflow's HTTP defaults retry for minutes; while logging, fail within about a minute instead
# (only where the user has not set these).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # one line per job, not two per run
}
UI_QUERY = "workflowType=machine_learning"  # the MLflow UI's "Machine learning" view
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 900


class TrackingError(Exception):
    """Logging to MLflow failed.

    Args:
        uri: The tracking URI.
        reason: What went wrong, one line.
    """

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.uri = uri


class TrackingUnreachableError(TrackingError):
    """The tracking server does not answer."""


@dataclass
class TrackingReport:
    """What :func:`log_results` logged.

    Attributes:
        uri: Tracking URI.
        experiment: Experiment name.
        experiment_id: Experiment id.
        run_id: The job's parent run.
        strategy_runs: Strategy -> child run id.
        trial_runs: Trial runs logged.
        artifacts: Artifact files and directories logged.
        skipped: Artifacts named by the job but not found (left out).
        already: True if this job id was already tracked (nothing logged).
    """

    uri: str
    experiment: str
    experiment_id: str
    run_id: str
    strategy_runs: dict[str, str] = field(default_factory=dict)
    trial_runs: int = 0
    artifacts: int = 0
    skipped: list[str] = field(default_factory=list)
    already: bool = False

    def line(self) -> str:
        """One line for the user."""
        if self.already:
            return (
                f"already tracked: experiment {self.experiment}, run {self.run_id} at {self.uri} "
                "(nothing logged; --force logs it again)"
            )
        left = f"; left out (not found): {', '.join(self.skipped)}" if self.skipped else ""
        view = f"; compare at {self.experiment_url}" if self.experiment_url else ""
        return (
            f"tracked: experiment {self.experiment}, run {self.run_id} at {self.uri} "
            f"({len(self.strategy_runs)} strategy runs, {self.trial_runs} trial runs, "
            f"{self.artifacts} artifacts){view}{left}"
        )

    @property
    def ui_url(self) -> str | None:
        """The parent run's page in the MLflow UI (HTTP tracking servers only)."""
        base = self.experiment_url
        return None if base is None else base.replace("/runs?", f"/runs/{self.run_id}?", 1)

    @property
    def experiment_url(self) -> str | None:
        """The experiment's runs table in the MLflow UI (HTTP tracking servers only).

        It names the UI's workflow type: MLflow 3.17's UI opens an experiment by the browser's
        GenAI / Machine learning switch (``workflowType``, GenAI unless changed), not by the
        experiment's kind tag, so a plain experiment link lands on the GenAI overview.
        """
        if urlparse(self.uri).scheme not in ("http", "https"):
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs?{UI_QUERY}"


def _one_line(text: object, limit: int = MAX_LINE_REASON) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``.

    Args:
        uri: Explicit URI (spec ``tracking.uri`` or ``--tracking-uri``), or None.

    Returns:
        A URI; the SQLite default has the absolute path of ``./mlflow.db``.
    """
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(DEFAULT_DB)}"


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI, or None for any other URI."""
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None


def probe(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Check that the tracking store can be reached (HTTP: ``GET /health``; SQLite: its folder).

    Any HTTP answer counts as reachable (errors such as 401 are reported by MLflow later).

    Args:
        uri: Tracking URI.
        timeout_s: Connect and read timeout (s).

    Raises:
        TrackingUnreachableError: No answer, or the SQLite folder cannot be created.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as resp:
                resp.read(64)
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingUnreachableError(uri, f"cannot reach {uri} ({_one_line(reason, 120)})") from e
    elif (path := sqlite_path(uri)) is not None:
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder or ".", exist_ok=True)
        except OSError as e:
            raise TrackingUnreachableError(uri, f"cannot create the folder of {uri} ({e})") from e


@contextlib.contextmanager
def _http_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in HTTP_ENV}
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)


def _client(uri: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise TrackingError(uri, f"mlflow is not installed ({e}); install sedtune[ray]") from e
    return MlflowClient(tracking_uri=uri)


def _get_or_create(client: Any, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        path = sqlite_path(uri)
        location = None
        if path is not None:
            location = "file://" + os.path.join(os.path.dirname(os.path.abspath(path)), "mlartifacts")
        try:
            return str(
                client.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            )
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError(uri, f"experiment {name!r} at {uri} is deleted; restore it or choose another")
    if EXPERIMENT_KIND_TAG not in exp.tags:  # made elsewhere: mark it, but keep a kind already chosen
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp.experiment_id)


def ensure_experiment(tracking_uri: str | None, name: str) -> str:
    """Create the experiment if it does not exist (call once in the driver before fanning out).

    Args:
        tracking_uri: Tracking URI (None: see :func:`resolve_uri`).
        name: Experiment name.

    Returns:
        The experiment id.
    """
    uri = resolve_uri(tracking_uri)
    probe(uri)
    with _http_env():
        return _get_or_create(_client(uri), name, uri)


def _write_plots(files: ResultFiles, stack: contextlib.ExitStack) -> dict[str, str]:
    """The figures: those the job drew (``artifacts.json``), else drawn now into ``<dir>/plots``
    (or a temporary directory if that is read-only); {} on failure."""
    drawn = {
        key.removeprefix("plots/"): found
        for key, path in files.artifacts.items()
        if key.startswith("plots/") and (found := local_artifact(files, path)) is not None
    }
    if drawn:
        return drawn
    from service.results.plots import write_plots

    try:
        try:
            return write_plots(files.comparison, os.path.join(files.path, "plots"))
        except OSError as e:
            LOG.info("cannot write figures into %s (%s); using a temporary directory", files.path, e)
            return write_plots(files.comparison, stack.enter_context(tempfile.TemporaryDirectory()))
    except Exception as e:  # figures are a nicety: log the numbers without them
        LOG.warning("cannot draw the figures of %s: %s: %s", files.path, type(e).__name__, e)
        return {}


def _previous(client: Any, exp_id: str, job_id: str) -> str | None:
    """A finished parent run of this job id, if any; partial earlier uploads are deleted."""
    if not job_id or not job_id.replace("-", "").replace("_", "").isalnum():
        return None
    runs = client.search_runs([exp_id], filter_string=f"tags.job_id = '{job_id}'", max_results=5000)
    done = [r for r in runs if r.data.tags.get("sedtune.role") == "job" and r.info.status == "FINISHED"]
    if done:
        return str(done[0].info.run_id)
    for r in runs:
        LOG.info("deleting run %s of an unfinished earlier upload of job %s", r.info.run_id, job_id)
        client.delete_run(r.info.run_id)
    return None


@dataclass
class _Tally:
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # (role, name, run id)
    artifacts: int = 0

    def ids(self, role: str) -> dict[str, str]:
        return {name: run_id for r, name, run_id in self.runs if r == role}


def _batches(params: list[Any], metrics: list[Any]) -> Iterator[tuple[list[Any], list[Any]]]:
    """``log_batch`` calls for a run: up to :data:`_PARAMS_PER_BATCH` params and
    :data:`_METRICS_PER_BATCH` metrics in each (MLflow's limits: 100 params, 1000 entities per
    call); a small run takes one call (one database transaction)."""
    n = max(math.ceil(len(params) / _PARAMS_PER_BATCH), math.ceil(len(metrics) / _METRICS_PER_BATCH))
    for i in range(n):
        yield (
            params[i * _PARAMS_PER_BATCH : (i + 1) * _PARAMS_PER_BATCH],
            metrics[i * _METRICS_PER_BATCH : (i + 1) * _METRICS_PER_BATCH],
        )


def _log_run(client: Any, exp_id: str, plan: RunPlan, parent: str | None, tally: _Tally) -> str:
    """Create one run of the plan with its children; FINISHED only once all of it is logged."""
    from mlflow.entities import Metric, Param

    tags = {k: v[:MAX_TAG_LEN] for k, v in plan.tags.items()}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    run_id = str(client.create_run(exp_id, tags=tags, run_name=plan.name).info.run_id)
    try:
        now = int(time.time() * 1000)
        for params, metrics in _batches(
            [Param(k, v) for k, v in plan.params.items()],
            [Metric(k, v, now, step) for k, v, step in plan.metrics],
        ):
            client.log_batch(run_id, params=params, metrics=metrics)
        for path, artifact_dir in plan.artifacts:
            if os.path.isdir(path):
                client.log_artifacts(run_id, path, artifact_dir)
            else:
                client.log_artifact(run_id, path, artifact_dir)
            tally.artifacts += 1
        for child in plan.children:
            _log_run(client, exp_id, child, run_id, tally)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    tally.runs.append((plan.tags.get("sedtune.role", ""), plan.name, run_id))
    return run_id


def log_results(
    result_dir: str, tracking_uri: str | None = None, experiment: str | None = None, *, force: bool = False
) -> TrackingReport:
    """Log a job's result directory to MLflow (figures are written into ``<dir>/plots/`` first).

    Args:
        result_dir: The job's output directory.
        tracking_uri: Tracking URI (None: the spec's ``tracking.uri``, then :func:`resolve_uri`).
        experiment: Experiment name (None: the spec's ``tracking.experiment``, else the job name).
            Created if missing; create it once in the driver (:func:`ensure_experiment`) when
            several workers log into it.
        force: Log even if a finished parent run of this job id exists.

    Returns:
        What was logged.

    Raises:
        SedtuneInputError: ``result_dir`` is not a readable result directory.
        TrackingError: Tracking failed (one-line message; ``TrackingUnreachableError`` if no answer).
    """
    files = load_result_dir(result_dir)
    tracking = files.spec.get("tracking") or {}
    uri = resolve_uri(tracking_uri or tracking.get("uri"))
    name = experiment or tracking.get("experiment") or files.job
    with contextlib.ExitStack() as stack:
        plots = _write_plots(files, stack)
        probe(uri)
        stack.enter_context(_http_env())
        try:
            client = _client(uri)
            exp_id = _get_or_create(client, name, uri)
            job_id = str(files.comparison.get("job_id", ""))
            prev = None if force else _previous(client, exp_id, job_id)
            if prev is not None:
                return TrackingReport(uri, name, exp_id, prev, already=True)
            plan, skipped = plan_job(files, plots)
            tally = _Tally()
            t0 = time.perf_counter()
            run_id = _log_run(client, exp_id, plan, None, tally)
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(uri, f"{uri}: {type(e).__name__}: {_one_line(e)}") from e
    LOG.info(
        "logged %d runs and %d artifacts to %s in %.1f s",
        len(tally.runs),
        tally.artifacts,
        uri,
        time.perf_counter() - t0,
    )
    return TrackingReport(
        uri, name, exp_id, run_id, tally.ids("strategy"), len(tally.ids("trial")), tally.artifacts, skipped
    )


def failure_line(err: BaseException, result_dir: str, uri: str) -> str:
    """The one line reporting a tracking failure, with how to re-log.

    Args:
        err: The failure.
        result_dir: Where the results are.
        uri: The tracking URI tried.
    """
    reason = str(err) if isinstance(err, TrackingError) else f"{uri}: {type(err).__name__}: {err}"
    return (
        f"tracking failed: {_one_line(reason)}; results are in {result_dir}; re-log with "
        f"`sedtune log {shlex.quote(result_dir)} --tracking-uri {shlex.quote(uri)}`"
    )


def try_log(
    output_dir: str, tracking_uri: str | None, experiment: str | None
) -> tuple[TrackingReport | None, str]:
    """Log a result directory; never raises.

    Args:
        output_dir: The job's result directory.
        tracking_uri: The spec's tracking URI (None: the default, see :func:`resolve_uri`).
        experiment: The spec's experiment name (None: the job name).

    Returns:
        The report (None if tracking failed) and one line for the user.
    """
    uri = resolve_uri(tracking_uri)
    try:
        rep = log_results(output_dir, uri, experiment)
    except Exception as e:
        LOG.debug("tracking failed", exc_info=True)
        return None, failure_line(e, output_dir, getattr(e, "uri", uri))
    return rep, rep.line()
