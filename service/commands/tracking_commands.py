"""Tracking commands: ``log`` (upload a job's result directory to MLflow, e.g. after a failure)."""

from __future__ import annotations

import argparse
import logging
import sys

LOG = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the tracking commands to the CLI."""
    p = sub.add_parser("log", help="log a job's result directory to MLflow (e.g. after a tracking failure)")
    p.add_argument("result_dir", help="the job's output directory (with comparison.json)")
    p.add_argument(
        "--tracking-uri",
        help="tracking URI (default: the job spec's tracking.uri, else "
        "$MLFLOW_TRACKING_URI, else sqlite:///<abs path of ./mlflow.db>)",
    )
    p.add_argument(
        "--experiment", help="experiment name (default: the spec's tracking.experiment, else the job name)"
    )
    p.add_argument("--force", action="store_true", help="log again even if this job id is already tracked")
    p.set_defaults(handler=run_log)


def run_log(args: argparse.Namespace) -> int:
    """``sedtune log RESULT_DIR``: 0 when logged (or already tracked), 1 with one line on failure.

    A directory that is not a result directory is bad input (exit 2, via the CLI).
    """
    from service.results.tracking import TrackingError, failure_line, log_results

    try:
        report = log_results(args.result_dir, args.tracking_uri, args.experiment, force=args.force)
    except TrackingError as e:
        LOG.debug("tracking failed", exc_info=True)
        print(failure_line(e, args.result_dir, e.uri), file=sys.stderr)
        return 1
    print(report.line())
    return 0
