"""A job's live status file, ``<output dir>/status.json``, written by the job as it runs.

The service reads it to show progress (the output roots are shared between the service and
the Ray workers). Format ``sedtune.status/1``::

    {"format": "sedtune.status/1", "job_id": "j-…", "state": "running", "updated_at": "…Z",
     "host": "worker-1",
     "strategies": {"exact": {"state": "done", "split": "1/1", "evaluations": 40.0,
                              "budget": 40.0, "fraction": 1.0, "best_tuning_f": 0.61}},
     "best_tuning_f": 0.61,          # best over finished strategies so far
     "recommended": null, "heldout_f": null,   # set when the job has written its results
     "mlflow": null, "tracking": null, "error": null}

``state`` is ``starting``, ``validating``, ``running``, ``writing``, ``tracking``, ``succeeded``,
``failed`` or ``interrupted`` (SIGTERM or SIGINT: ``error`` says which and what the job left;
strategies still running are ``interrupted`` too, and no recommendation is set unless the
results were complete). Writes are atomic (temporary file and rename) and at most one every
``min_interval_s`` for progress ticks; state changes are written at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

LOG = logging.getLogger(__name__)

FORMAT = "sedtune.status/1"
FILENAME = "status.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def read_status(output_dir: str) -> dict[str, Any] | None:
    """The status file of a job's output directory, or None if missing or unreadable."""
    try:
        with open(os.path.join(output_dir, FILENAME), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


class ProgressFile:
    """Keeps ``status.json`` of one job up to date.

    Args:
        output_dir: The job's output directory (created if missing).
        job_id: The job's id.
        strategies: (name, budget in full-set evaluations or None) in spec order.
        min_interval_s: Minimum seconds between two progress writes.
    """

    def __init__(self, output_dir: str, job_id: str, strategies: list[tuple[str, float | None]],
                 min_interval_s: float = 0.5) -> None:
        self.path = os.path.join(output_dir, FILENAME)
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last = 0.0
        self.doc: dict[str, Any] = {
            "format": FORMAT, "job_id": job_id, "state": "starting", "updated_at": _now(),
            "host": socket.gethostname(),
            "strategies": {n: {"state": "pending", "split": None, "evaluations": 0.0, "budget": b,
                               "fraction": 0.0, "best_tuning_f": None} for n, b in strategies},
            "best_tuning_f": None, "recommended": None, "heldout_f": None,
            "mlflow": None, "tracking": None, "error": None,
        }
        os.makedirs(output_dir, exist_ok=True)
        self._write(force=True)

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its callbacks (with our progress closures) into its experiment
        # state; a lock cannot be pickled, and a copy needs a lock of its own anyway.
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        self.doc["updated_at"] = _now()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.doc, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as e:  # progress is a nicety: never fail the job for it
            LOG.warning("cannot write %s: %s", self.path, e)

    def set(self, **values: Any) -> None:
        """Set top-level fields (``state``, ``recommended``, ``mlflow``, ...) and write at once."""
        with self._lock:
            self.doc.update(values)
            self._write(force=True)

    def factory(self, label: str, total: float | None) -> Callable[[float], None]:
        """A progress callback for :func:`service.tuning.runner.run_job` (``progress=``).

        Args:
            label: The runner's label, ``"<strategy> (split k/n)"``.
            total: The strategy's budget (full-set evaluations), or None.
        """
        name, _, rest = label.partition(" ")
        split = rest.strip("()").removeprefix("split ") or None
        with self._lock:
            entry = self.doc["strategies"].setdefault(name, {"budget": total, "best_tuning_f": None})
            entry.update(state="running", split=split, evaluations=0.0, fraction=0.0)
            self._write(force=True)

        return _Tick(self, name, total)

    def tick(self, name: str, total: float | None, done: float) -> None:
        """Record ``done`` evaluations of strategy ``name`` (throttled write)."""
        with self._lock:
            entry = self.doc["strategies"][name]
            entry["evaluations"] = _num(done)
            entry["fraction"] = _num(min(1.0, done / total)) if total else None
            self._write()

    def strategy_done(self, name: str, best_tuning_f: float | None) -> None:
        """Record a strategy's end and its best tuning macro F (split-wise maximum kept)."""
        with self._lock:
            entry = self.doc["strategies"].setdefault(name, {})
            prev = entry.get("best_tuning_f")
            best = _num(best_tuning_f)
            if best is not None and (prev is None or best > prev):
                entry["best_tuning_f"] = best
            entry["state"] = "done"
            if entry.get("budget"):
                entry["fraction"] = 1.0
            values = [e["best_tuning_f"] for e in self.doc["strategies"].values()
                      if e.get("best_tuning_f") is not None]
            self.doc["best_tuning_f"] = max(values) if values else None
            self._write(force=True)

    def interrupted(self, line: str) -> None:
        """Record that the job was stopped by a signal (``line``: which, and what it left).

        The signal may have cut a write short while it held the lock; after a few seconds the
        file is written without it.
        """
        locked = self._lock.acquire(timeout=5.0)
        try:
            for entry in self.doc["strategies"].values():
                if entry.get("state") == "running":
                    entry["state"] = "interrupted"
            self.doc.update(state="interrupted", error=line)
            self._write(force=True)
        finally:
            if locked:
                self._lock.release()


class _Tick:
    """The progress callback of one strategy (a class, not a closure: Ray Tune pickles it)."""

    def __init__(self, progress: ProgressFile, name: str, total: float | None) -> None:
        self.progress = progress
        self.name = name
        self.total = total

    def __call__(self, done: float) -> None:
        """Called by the strategy with the evaluations spent so far."""
        self.progress.tick(self.name, self.total, done)
