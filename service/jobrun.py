"""The process a Ray job runs: ``python -m service.jobrun --job-id ID --spec-b64 B64``.

It decodes and re-validates the spec (it trusts nothing on its command line), checks the
data, connects to the cluster it runs in (``$RAY_ADDRESS``, set by the Ray job supervisor,
else ``auto``), runs every strategy, writes the results into the spec's output directory,
logs them to MLflow and keeps ``<output>/status.json`` (:mod:`service.results.status`) up to
date all along. Exit code 0 on success (a tracking failure is recorded in the status file
but does not fail the job), 2 for a bad spec or data, 1 for any other failure; the reason is
one line on stderr and in the status file.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from envs.errors import SedtuneInputError
from envs.problem import TuningProblem
from service.results.status import ProgressFile
from service.strategies.base import RunContext, Strategy, StrategyResult
from service.tuning.spec import JobSpec

LOG = logging.getLogger("sedtune.jobrun")


class _Reporting(Strategy):
    """Runs a strategy and records its best tuning F in the status file when it ends."""

    name = "reporting"

    def __init__(self, inner: Strategy, progress: ProgressFile) -> None:
        super().__init__(inner.options)
        self.inner = inner
        self.progress = progress

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Delegate, then report."""
        res = self.inner.run(problem, budget, seed, ctx)
        finite = [p.best_f for p in res.trajectory if math.isfinite(p.best_f)]
        self.progress.strategy_done(self.inner.name, max(finite) if finite else None)
        return res


def _track(spec: JobSpec, output_dir: str) -> tuple[dict[str, Any] | None, str]:
    """Log the result directory to MLflow; (run info or None, one line)."""
    from service.results.tracking import try_log

    rep, line = try_log(output_dir, spec.tracking.uri, spec.tracking.experiment)
    if rep is None:
        return None, line
    info = {"uri": rep.uri, "experiment": rep.experiment, "experiment_id": rep.experiment_id,
            "run_id": rep.run_id, "url": rep.ui_url, "strategy_runs": rep.strategy_runs}
    return info, line


def run(job_id: str, spec: JobSpec) -> int:
    """Run one job; see the module docstring for exit codes.

    Args:
        job_id: The job's id (passed to the runner; the process environment is not changed).
        spec: The validated, effective spec.
    """
    from service.tuning.check import check_job
    from service.tuning.outputs import write_outputs
    from service.tuning.runner import run_job

    spec = spec.with_absolute_paths()  # relative paths: against this job's working directory
    status = ProgressFile(spec.output_dir, job_id, [(s.name, s.budget) for s in spec.strategies])
    try:
        status.set(state="validating")
        resolved = check_job(spec)
        resolved.strategies = [(n, b, _Reporting(s, status)) for n, b, s in resolved.strategies]
        status.set(state="running")
        address = os.environ.get("RAY_ADDRESS") or "auto"
        result = run_job(spec, address=address, progress=status.factory, resolved=resolved, job_id=job_id)
        status.set(state="writing")
        write_outputs(result)
        rec = result.recommended
        status.set(recommended=rec.key,
                   heldout_f=None if math.isnan(rec.heldout_f_mean) else round(rec.heldout_f_mean, 6))
        if spec.tracking.enabled:
            status.set(state="tracking")
            info, line = _track(spec, result.output_dir)
            status.set(mlflow=info, tracking=line)
            LOG.info("%s", line)
        status.set(state="succeeded")
        return 0
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
    """Command-line entry of the Ray job."""
    from service.server.entrypoint import JOB_ID_PATTERN, decode_spec

    parser = argparse.ArgumentParser(prog="python -m service.jobrun", description=__doc__.splitlines()[0])
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--spec-b64", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not JOB_ID_PATTERN.match(args.job_id):
        print(f"sedtune job: error: --job-id must match {JOB_ID_PATTERN.pattern}, got {args.job_id!r}",
              file=sys.stderr)
        return 2
    try:
        spec = decode_spec(args.spec_b64)
    except SedtuneInputError as e:
        print(f"sedtune job {args.job_id}: error: {e}", file=sys.stderr)
        return 2
    return run(args.job_id, spec)


if __name__ == "__main__":
    sys.exit(main())
