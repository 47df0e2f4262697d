"""MLflow tracking in a helper process that gets ready while the job runs.

A one-shot command (the ``sedtune`` console script: ``tune``, ``demo``) logs its results to
MLflow after they are written, and before that it must import MLflow and open the store:
measured on this 2-core machine, importing MLflow 1.5-2.3 s, opening an existing SQLite store
0.6-1.2 s, creating a new one (its schema migrations) 0.9-3.1 s, all after the results were
printed. :func:`start` begins that work in a helper process (``python -m
service.results.tracking_helper``) when the job starts, so it overlaps the tuning:

- the helper, at the lowest CPU priority, imports MLflow; for an SQLite store that exists it
  opens it (a read); for one
  that does not exist yet it creates a *template* store in a private temporary folder (the
  same migrations) and leaves the target alone, so a job that fails or is interrupted leaves
  no store behind;
- :meth:`Helper.log` sends it the result directory; the helper copies the template into
  place if the store still does not exist (beside the target under a temporary name, then a
  hard link, which never replaces a store created meanwhile), runs
  :func:`service.results.tracking.try_log` and answers one JSON line: the report and the
  user's line, exactly what ``try_log`` in the calling process would have returned;
- :meth:`Helper.close` (the job failed) stops it with SIGTERM; it removes its temporary folder.

Any failure of the helper itself (it cannot start, dies, answers something unreadable) makes
:meth:`Helper.log` fall back to ``try_log`` in the calling process, so tracking's results
and messages do not depend on the helper. The helper ignores SIGINT (a terminal sends it to
the whole process group): the job's own interrupt handling decides, and an interrupted
:meth:`Helper.log` stops the helper with SIGTERM, as an interrupt stops in-process logging.
Its log lines go to the caller's stderr (the run's log while a CLI run is live).

Only the console script enables it (:func:`enable`); in-process callers (the tests, the
service's job process) log in their own process as before.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import IO, Any

from service.results.tracking import TrackingReport, resolve_uri, sqlite_path, try_log

LOG = logging.getLogger(__name__)

#: Whether :func:`start` starts a helper (see the module docstring).
_enabled = False
#: The helper's nice value while it prepares (the lowest priority).
LOW_PRIORITY = 19
#: Seconds to wait for the helper after SIGTERM before killing it.
CLOSE_TIMEOUT_S = 10.0


def enable(on: bool = True) -> None:
    """From now on, :func:`start` prepares tracking in a helper process."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    """Whether :func:`start` starts a helper."""
    return _enabled


class Helper:
    """A started helper process (see the module docstring).

    Args:
        proc: The helper process (stdin and stdout are pipes, text mode).
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        #: Whether :meth:`log`'s answer came from the helper (False: logged in this process).
        self.answered = False

    def log(
        self, output_dir: str, tracking_uri: str | None, experiment: str | None
    ) -> tuple[TrackingReport | None, str]:
        """Log a result directory (same arguments and result as :func:`try_log`); never raises
        an ``Exception`` (an interrupt stops the helper and propagates)."""
        answer = None
        try:
            answer = self._ask(output_dir, tracking_uri, experiment)
        except Exception:
            LOG.debug("tracking helper failed; logging in this process", exc_info=True)
        finally:
            if answer is None:  # failed, or interrupted (the interrupt propagates)
                self._stop()
        if answer is None:
            return try_log(output_dir, tracking_uri, experiment)
        self.answered = True
        return answer

    def _ask(
        self, output_dir: str, tracking_uri: str | None, experiment: str | None
    ) -> tuple[TrackingReport | None, str] | None:
        stdin, stdout = _pipes(self.proc)
        req = {"output_dir": output_dir, "uri": tracking_uri, "experiment": experiment}
        stdin.write(json.dumps(req) + "\n")
        stdin.close()
        text = stdout.read()
        self.proc.wait()
        msg = json.loads(text) if text.strip() else None
        if self.proc.returncode != 0 or not isinstance(msg, dict) or not isinstance(msg.get("line"), str):
            LOG.debug("tracking helper: exit %s, answer %r", self.proc.returncode, text[-300:])
            return None
        report = msg.get("report")
        return (None if report is None else TrackingReport(**report)), msg["line"]

    def close(self) -> None:
        """End the helper if it still runs (the job failed or was interrupted before logging).

        It is stopped with SIGTERM, on which it removes its temporary folder and exits: what it
        prepared is a template in that folder, never the target store.
        """
        self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            _pipes(self.proc)[0].close()
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=CLOSE_TIMEOUT_S)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _pipes(proc: subprocess.Popen[str]) -> tuple[IO[str], IO[str]]:
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdin, proc.stdout


def start(tracking_uri: str | None) -> Helper | None:
    """Start a helper for a job that will log to ``tracking_uri`` (None: the default store), if
    enabled (:func:`enable`); None when disabled or when the process cannot start (the caller
    then logs in its own process)."""
    if not _enabled:
        return None
    cmd = [sys.executable, "-m", "service.results.tracking_helper", "--uri", resolve_uri(tracking_uri),
           "--log-level", str(logging.getLogger().getEffectiveLevel()),
           "--service-log-level", str(logging.getLogger("service").getEffectiveLevel())]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    except OSError:
        LOG.debug("cannot start the tracking helper", exc_info=True)
        return None
    return Helper(proc)


# The helper process.


def _prepare(uri: str, workdir: str) -> str | None:
    """Import MLflow and open (or, as a template in ``workdir``, create) the store.

    Returns:
        The template store's path, or None (the store exists, or is not SQLite).
    """
    from mlflow import MlflowClient

    path = sqlite_path(uri)
    if path is None:
        return None
    if os.path.exists(path):
        MlflowClient(tracking_uri=uri).get_experiment_by_name("Default")
        return None
    template = os.path.join(workdir, "template.db")
    MlflowClient(tracking_uri=f"sqlite:///{template}").get_experiment_by_name("Default")
    return template


def _place(template: str, uri: str) -> None:
    """Copy the template store to ``uri``'s path if nothing is there yet (never replaces)."""
    path = sqlite_path(uri)
    if path is None or os.path.exists(path):
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, side = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(side, 0o666 & ~umask)  # as a store MLflow creates (mkstemp's file is private)
    try:
        shutil.copyfile(template, side)
        with contextlib.suppress(FileExistsError):  # created meanwhile: that store is used
            os.link(side, path)
    finally:
        os.unlink(side)


def _serve(uri: str, answer: IO[str]) -> int:
    workdir = tempfile.mkdtemp(prefix="sedtune-tracking-")
    try:
        template = None
        # Preparing must not slow the job: on 2 cores Ray's start and the strategies use the
        # CPU most of the time, and a helper at their priority delayed them by as much as it
        # saved (measured); at the lowest priority it runs on the CPU time they leave idle.
        base = os.getpriority(os.PRIO_PROCESS, 0)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, LOW_PRIORITY)
        try:
            template = _prepare(uri, workdir)
        except Exception:  # try_log reports a store's problem in its own words
            LOG.debug("preparing %s failed", uri, exc_info=True)
        line = sys.stdin.readline()
        if not line.strip():
            return 0  # the job did not get to logging
        # The caller now waits for the helper: back to its priority where the system allows it
        # (lowering a nice value needs privileges or RLIMIT_NICE; otherwise it stays low).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, base)
        req: dict[str, Any] = json.loads(line)
        if template is not None and resolve_uri(req["uri"]) == uri:
            with contextlib.suppress(OSError):  # try_log then creates the store itself
                _place(template, uri)
        report, text = try_log(req["output_dir"], req["uri"], req["experiment"])
        out = {"report": None if report is None else dataclasses.asdict(report), "line": text}
        answer.write(json.dumps(out) + "\n")
        answer.flush()
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM: exit through the ``finally`` clauses (the temporary folder is removed)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """The helper process's entry (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminated)
    ap = argparse.ArgumentParser(prog="python -m service.results.tracking_helper")
    ap.add_argument("--uri", required=True, help="the resolved tracking URI")
    ap.add_argument("--log-level", type=int, default=logging.WARNING, help="the caller's root level")
    ap.add_argument("--service-log-level", type=int, default=logging.WARNING, help="its sedtune level")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("service").setLevel(args.service_log_level)
    # The answer goes to the original stdout; anything else printed goes to stderr (the log).
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return _serve(args.uri, answer)


if __name__ == "__main__":
    sys.exit(main())
