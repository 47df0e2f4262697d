"""The one pipeline of a tuning job: check, run, write outputs, publish them, track.

Both entry points call :func:`run_pipeline`: ``sedtune tune`` / ``sedtune demo`` (a live line
per strategy on the terminal, everything else in the run's log: :mod:`service.commands.runlog`)
and the Ray job process ``python -m service.jobrun`` (the status file
the service reads). What differs between them is how they report, which is a
:class:`Reporter`, and their output folder (:mod:`service.tuning.staging`): the CLI runs in a
staging folder renamed into place when complete (``staged=True``), the job in its own fresh
folder. Validation happens first, so a bad spec never reaches Ray.

Interruption (:mod:`service.tuning.interrupt`): SIGINT or SIGTERM anywhere before the results
are published raises :class:`~service.tuning.interrupt.Interrupted` with nothing published
(the staged files are removed); one after it (while tracking) says the results are complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from service.tuning import interrupt
from service.tuning.check import check_job
from service.tuning.outputs import write_outputs
from service.tuning.runner import JobResult, run_job
from service.tuning.spec import JobSpec
from service.tuning.staging import InPlaceOutput, OutputFolder, StagedOutput, check_output

if TYPE_CHECKING:
    from service.results.tracking import TrackingReport
    from service.strategies.base import StrategyResult
    from service.tuning.check import ResolvedJob


class Reporter(Protocol):
    """How a pipeline tells its caller where it is."""

    def stage(self, state: str) -> None:
        """The pipeline entered ``state``: validating, running, writing or tracking."""

    def progress(self, label: str, total: float | None) -> Callable[[float], None]:
        """A callback for one strategy run, called with full-set evaluations spent so far.

        The callback may also have a method ``best(f)`` for the best tuning macro F so far
        (:meth:`service.strategies.base.RunContext.report`).

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
    *,
    staged: bool = False,
    force: bool = False,
) -> PipelineRun:
    """Validate, run every strategy, write and publish the result folder, log it to MLflow.

    Args:
        spec: The job spec; relative paths are taken against the working directory.
        reporter: Where stages and progress go.
        address: Ray address; None starts a local Ray (unless the spec names a cluster).
        track: False skips MLflow even when the spec enables it.
        job_id: The job's id (default: ``$SEDTUNE_JOB_ID`` or a new one).
        staged: Run in a staging folder beside the output folder and rename it into place
            when complete (:class:`~service.tuning.staging.StagedOutput`); a non-empty output
            folder is refused before anything runs. False: write into the output folder
            itself, results moved in when complete (the Ray job's own fresh folder).
        force: With ``staged``, replace a non-empty output folder (when the run completes).

    Raises:
        SedtuneInputError: The spec, its data or its output folder is refused (before any Ray
            work).
        Interrupted: SIGINT or SIGTERM (see the module docstring).
    """
    spec = spec.with_absolute_paths()
    target = spec.output_dir
    with interrupt.interruptible():
        reporter.stage("validating")
        if staged:
            check_output(target, force)
        resolved = check_job(spec)
        with interrupt.deferred():  # a signal now is raised by the first check, which discards it
            folder: OutputFolder = StagedOutput(target, force) if staged else InPlaceOutput(target)
        tracking = track and spec.tracking.enabled
        helper = None
        if tracking:
            from service.results import tracking_helper

            # MLflow's import and store get ready in a helper while the job runs (console script only).
            helper = tracking_helper.start(spec.tracking.uri)
        try:
            result, paths = _run_and_publish(spec, resolved, folder, reporter, address, job_id)
            report: TrackingReport | None = None
            line = ""
            try:
                interrupt.check()  # a signal while publishing: the results stand, tracking is skipped
                reporter.written(result, paths)
                if tracking:
                    from service.results.tracking import try_log

                    reporter.stage("tracking")
                    uri, experiment = spec.tracking.uri, spec.tracking.experiment
                    if helper is not None:
                        report, line = helper.log(result.output_dir, uri, experiment)
                    else:
                        report, line = try_log(result.output_dir, uri, experiment)
                    reporter.tracked(report, line)
                interrupt.check()
            except interrupt.Interrupted as e:
                done = f"the results in {target} are complete"
                note = f"{done}; MLflow tracking is incomplete" if tracking else done
                raise interrupt.Interrupted(e.signum, note) from None
        finally:
            if helper is not None:
                helper.close()  # ends it if it still runs (the job failed, or a signal before logging)
    return PipelineRun(result, paths, report, line)


def _run_and_publish(
    spec: JobSpec,
    resolved: ResolvedJob,
    folder: OutputFolder,
    reporter: Reporter,
    address: str | None,
    job_id: str | None,
) -> tuple[JobResult, dict[str, str]]:
    """Run the job in ``folder.run_dir``, write its results and publish them; nothing on failure."""
    try:
        interrupt.check()
        run_spec = spec.model_copy(update={"output": folder.run_dir})
        reporter.stage("running")
        result = run_job(
            run_spec,
            address=address,
            progress=reporter.progress,
            resolved=dataclasses.replace(resolved, spec=run_spec),
            job_id=job_id,
            on_strategy_done=reporter.strategy_done,
        )
        interrupt.check()
        reporter.stage("writing")
        # The result as published: the spec as given, the output folder its own.
        result = dataclasses.replace(result, spec=spec, output_dir=spec.output_dir)
        paths = write_outputs(result, into=folder.results_dir())
        interrupt.check()
        folder.publish()
    except BaseException as e:
        folder.discard()
        signum = interrupt.received()
        if signum is None or isinstance(e, interrupt.Interrupted):
            raise
        raise interrupt.stop(signum) from e  # a failure caused by the signal (e.g. workers gone)
    return result, paths
