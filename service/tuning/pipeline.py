"""The one pipeline of a tuning job: check, run, write outputs, track.

Both entry points call :func:`run_pipeline`: ``sedtune tune`` / ``sedtune demo`` (progress
bars on the terminal) and the Ray job process ``python -m service.jobrun`` (the status file
the service reads). What differs between them is only how they report, which is a
:class:`Reporter`; validation happens first, so a bad spec never reaches Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from service.tuning.check import check_job
from service.tuning.outputs import write_outputs
from service.tuning.runner import JobResult, run_job
from service.tuning.spec import JobSpec

if TYPE_CHECKING:
    from service.results.tracking import TrackingReport
    from service.strategies.base import StrategyResult


class Reporter(Protocol):
    """How a pipeline tells its caller where it is."""

    def stage(self, state: str) -> None:
        """The pipeline entered ``state``: validating, running, writing or tracking."""

    def progress(self, label: str, total: float | None) -> Callable[[float], None]:
        """A callback for one strategy run, called with full-set evaluations spent so far.

        Args:
            label: ``"<strategy> (split k/n)"``.
            total: The strategy's budget in full-set evaluations, or None.
        """

    def strategy_done(self, name: str, result: StrategyResult) -> None:
        """A strategy finished one split."""

    def written(self, result: JobResult, paths: dict[str, str]) -> None:
        """The result folder is written (``paths``: output name -> file)."""

    def tracked(self, report: TrackingReport | None, line: str) -> None:
        """MLflow tracking ended: its report (None when it failed) and one line for the user."""


@dataclass
class PipelineRun:
    """What a pipeline produced.

    Attributes:
        result: The job's result.
        paths: Output files written (name -> path).
        tracking: The MLflow report, or None (tracking off or failed).
        tracking_line: One line on tracking for the user ("" when tracking was off).
    """

    result: JobResult
    paths: dict[str, str]
    tracking: TrackingReport | None
    tracking_line: str


def run_pipeline(
    spec: JobSpec,
    reporter: Reporter,
    address: str | None = None,
    track: bool = True,
    job_id: str | None = None,
) -> PipelineRun:
    """Validate, run every strategy, write the result folder, log it to MLflow.

    Args:
        spec: The job spec; relative paths are taken against the working directory.
        reporter: Where stages and progress go.
        address: Ray address; None starts a local Ray (unless the spec names a cluster).
        track: False skips MLflow even when the spec enables it.
        job_id: The job's id (default: ``$SEDTUNE_JOB_ID`` or a new one).

    Raises:
        SedtuneInputError: The spec or its data is invalid (raised before any Ray work).
    """
    spec = spec.with_absolute_paths()
    reporter.stage("validating")
    resolved = check_job(spec)
    reporter.stage("running")
    result = run_job(
        spec,
        address=address,
        progress=reporter.progress,
        resolved=resolved,
        job_id=job_id,
        on_strategy_done=reporter.strategy_done,
    )
    reporter.stage("writing")
    paths = write_outputs(result)
    reporter.written(result, paths)
    report: TrackingReport | None = None
    line = ""
    if track and spec.tracking.enabled:
        from service.results.tracking import try_log

        reporter.stage("tracking")
        report, line = try_log(result.output_dir, spec.tracking.uri, spec.tracking.experiment)
        reporter.tracked(report, line)
    return PipelineRun(result, paths, report, line)
