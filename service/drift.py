"""Drift between two successful runs of a schedule: per-class parameter changes, held-out F1 delta.

Format (``sedtune.drift/1``)::

    {"format": "sedtune.drift/1", "previous_job_id": "j-…", "job_id": "j-…",
     "heldout_f": {"previous": 0.52, "current": 0.55, "delta": 0.03},
     "changed_classes": ["Dog"], "max_abs_threshold_delta": 0.05,
     "classes": {"Dog": {"threshold": {"previous": 0.40, "current": 0.45, "delta": 0.05},
                         "median_filter_frames": {"previous": 7, "current": 7, "delta": 0}, …}},
     "added_classes": [], "removed_classes": []}

Every numeric parameter of the recommended (``best_params``) table is compared, class by class;
``delta`` is current minus previous (None where either side is missing).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from envs.params import ClassParams

FORMAT = "sedtune.drift/1"
_FIELDS = tuple(f.name for f in dataclasses.fields(ClassParams))


def _delta(prev: Any, cur: Any) -> float | int | None:
    if isinstance(prev, (int, float)) and isinstance(cur, (int, float)):
        d = cur - prev
        return d if isinstance(d, int) else round(float(d), 6)
    return None


def compute_drift(previous: dict[str, Any], current: dict[str, Any], previous_job_id: str,
                  job_id: str) -> dict[str, Any]:
    """The drift of ``current`` against ``previous`` (both :func:`service.results.summarize` outputs).

    Args:
        previous: Summary of the previous successful run.
        current: Summary of this run.
        previous_job_id: Id of the previous run's job.
        job_id: Id of this run's job.
    """
    pp: dict[str, Any] = previous.get("best_params") or {}
    cp: dict[str, Any] = current.get("best_params") or {}
    classes: dict[str, Any] = {}
    changed: list[str] = []
    max_thr = 0.0
    for c in sorted(set(pp) & set(cp)):
        entry = {}
        for f in _FIELDS:
            a, b = pp[c].get(f), cp[c].get(f)
            entry[f] = {"previous": a, "current": b, "delta": _delta(a, b)}
        classes[c] = entry
        if any(entry[f]["previous"] != entry[f]["current"] for f in _FIELDS):
            changed.append(c)
        d = entry["threshold"]["delta"]
        if isinstance(d, (int, float)):
            max_thr = max(max_thr, abs(float(d)))
    hp, hc = previous.get("heldout_f"), current.get("heldout_f")
    return {
        "format": FORMAT, "previous_job_id": previous_job_id, "job_id": job_id,
        "heldout_f": {"previous": hp, "current": hc, "delta": _delta(hp, hc)},
        "changed_classes": changed, "max_abs_threshold_delta": round(max_thr, 6),
        "classes": classes, "added_classes": sorted(set(cp) - set(pp)),
        "removed_classes": sorted(set(pp) - set(cp)),
    }
