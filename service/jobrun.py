"""The process a Ray job runs: ``python -m service.jobrun --job-id ID --spec-file PATH``.

It reads and re-validates the spec (it trusts nothing on its command line), confines its
paths to the service's roots again (see :func:`main`), checks the data, connects to the
cluster it runs in (``$RAY_ADDRESS``, set by the Ray job supervisor, else ``auto``), runs
every strategy, writes the results into the spec's output directory, logs them to MLflow and
keeps ``<output>/status.json`` (:mod:`service.results.status`) up to date all along. Exit code
0 on success (a tracking failure is recorded in the status file but does not fail the job), 2
for a bad spec or data, 1 for any other failure; the reason is one line on stderr and in the
status file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from envs.errors import SedtuneInputError
from service.results.status import ProgressFile
from service.tuning.spec import JobSpec

if TYPE_CHECKING:
    from service.results.tracking import TrackingReport
    from service.strategies.base import StrategyResult
    from service.tuning.runner import JobResult

LOG = logging.getLogger("sedtune.jobrun")


class StatusReporter:
    """Reports the pipeline into the job's status file (:mod:`service.results.status`)."""

    def __init__(self, status: ProgressFile) -> None:
        self.status = status

    def stage(self, state: str) -> None:
        """Record the pipeline's state."""
        self.status.set(state=state)

    def progress(self, label: str, total: float | None) -> Callable[[float], None]:
        """The status file's progress callback for one strategy run."""
        return self.status.factory(label, total)

    def strategy_done(self, name: str, result: StrategyResult) -> None:
        """Record the strategy's best tuning F."""
        finite = [p.best_f for p in result.trajectory if math.isfinite(p.best_f)]
        self.status.strategy_done(name, max(finite) if finite else None)

    def written(self, result: JobResult, paths: dict[str, str]) -> None:
        """Record the recommendation."""
        rec = result.recommended
        self.status.set(recommended=rec.key,
                        heldout_f=None if math.isnan(rec.heldout_f_mean) else round(rec.heldout_f_mean, 6))

    def tracked(self, report: TrackingReport | None, line: str) -> None:
        """Record the MLflow run (or why tracking failed)."""
        info = None
        if report is not None:
            info = {"uri": report.uri, "experiment": report.experiment,
                    "experiment_id": report.experiment_id, "run_id": report.run_id,
                    "url": report.ui_url, "strategy_runs": report.strategy_runs}
        self.status.set(mlflow=info, tracking=line)
        LOG.info("%s", line)


def run(job_id: str, spec: JobSpec) -> int:
    """Run one job; see the module docstring for exit codes.

    SIGTERM (``ray job stop``, the service cancelling it) or SIGINT stops the strategies
    (:mod:`service.tuning.interrupt`): the status file says ``interrupted`` with the signal and
    what the job leaves, no results are published (no ``best_params.json``, no
    recommendation), and the exit code is 128 + the signal number (143 for SIGTERM, 130 for
    SIGINT). A signal after the status says ``succeeded`` is ignored.

    Args:
        job_id: The job's id (passed to the runner; the process environment is not changed).
        spec: The validated, effective spec.
    """
    from service.tuning import interrupt
    from service.tuning.pipeline import run_pipeline

    spec = spec.with_absolute_paths()  # relative paths: against this job's working directory
    with interrupt.interruptible():
        with interrupt.deferred():  # a signal now: raised by the check below, recorded in the file
            status = ProgressFile(spec.output_dir, job_id, [(s.name, s.budget) for s in spec.strategies])
        try:
            interrupt.check()
            address = os.environ.get("RAY_ADDRESS") or "auto"
            run_pipeline(spec, StatusReporter(status), address=address, job_id=job_id)
            with interrupt.deferred():
                status.set(state="succeeded")
            return 0
        except interrupt.Interrupted as e:
            status.interrupted(e.line())
            print(f"sedtune job {job_id}: {e.line()}", file=sys.stderr)
            return e.exit_code
        except SedtuneInputError as e:
            status.set(state="failed", error=" ".join(str(e).split()))
            print(f"sedtune job {job_id}: error: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
        except Exception as e:
            LOG.exception("job %s failed", job_id)
            line = " ".join(f"{type(e).__name__}: {e}".split())
            status.set(state="failed", error=line)
            print(f"sedtune job {job_id}: failed: {line}", file=sys.stderr)
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of the Ray job.

    ``--spec-file`` is the job file the service wrote (:mod:`service.server.jobfile`; checked
    against ``--spec-sha256``); when it carries the service's roots, every path of the spec is
    resolved and checked again here, before anything is read (:mod:`service.server.confine`),
    and the job runs on the resolved paths. A path that now leads out of the roots (a folder
    swapped for a symlink after submission) ends the job at once: exit 2, status ``failed``
    with the one-line reason.
    """
    from service.server.confine import Confinement, confine_spec
    from service.server.entrypoint import JOB_ID_PATTERN
    from service.server.jobfile import read_jobfile
    from service.server.policy import FieldError

    parser = argparse.ArgumentParser(prog="python -m service.jobrun", description=__doc__.splitlines()[0])
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--spec-file", required=True, help="the job file the service wrote (or a JSON spec)")
    parser.add_argument("--spec-sha256", help="SHA-256 of --spec-file; the job refuses a file that differs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not JOB_ID_PATTERN.match(args.job_id):
        print(f"sedtune job: error: --job-id must match {JOB_ID_PATTERN.pattern}, got {args.job_id!r}",
              file=sys.stderr)
        return 2
    conf: Confinement | None = None
    try:
        spec, conf_doc = read_jobfile(args.spec_file, args.job_id, args.spec_sha256)
        if conf_doc is not None:
            conf = Confinement.from_json(conf_doc, f"--spec-file {args.spec_file}")
    except SedtuneInputError as e:
        print(f"sedtune job {args.job_id}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if conf is not None:
        try:
            spec = confine_spec(spec, conf)
        except FieldError as e:
            line = " ".join(str(e).split())
            if e.field != "output":  # the output folder passed: record why in its status file
                with contextlib.suppress(OSError):
                    ProgressFile(spec.output_dir, args.job_id, [(s.name, s.budget) for s in spec.strategies]
                                 ).set(state="failed", error=line)
            print(f"sedtune job {args.job_id}: error: {line}", file=sys.stderr)
            return 2
    return run(args.job_id, spec)


if __name__ == "__main__":
    sys.exit(main())
