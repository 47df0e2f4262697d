"""Drift between two successful runs of a schedule: per-class parameter changes, held-out F1 delta.

Format (``sedtune.drift/1``)::

    {"format": "sedtune.drift/1", "previous_job_id": "j-…", "job_id": "j-…",
     "heldout_f": {"previous": 0.52, "current": 0.55, "delta": 0.03},
     "changed_classes": ["Dog", "Cat"], "max_abs_threshold_delta": 0.05,
     "decoder_changes": {"Cat": {"previous": "frames", "current": "boxes"}},
     "classes": {"Dog": {"decoder": {"previous": "frames", "current": "frames", "delta": null},
                         "threshold": {"previous": 0.40, "current": 0.45, "delta": 0.05},
                         "median_filter_frames": {"previous": 7, "current": 7, "delta": 0}, …},
                 "Cat": {"decoder": {"previous": "frames", "current": "boxes", "delta": null},
                         "threshold_off": {"previous": null, "current": null, "delta": null},
                         "step_filter_s": {"previous": null, "current": 0.48, "delta": null}, …}},
     "added_classes": [], "removed_classes": []}

Every parameter of the recommended (``best_params``) table is compared, class by class: the
fields of the class's decoder(s) (:data:`envs.params.DECODER_FIELDS`; both decoders' when the
decoder changed, a field the other side's decoder does not have being null there). ``delta``
is current minus previous for numbers (None where either side is missing or not a number).
An entry without ``decoder`` (parameter files of format ``sedtune.params/1``) is ``frames``.
A class whose decoder changed is in ``decoder_changes``; its ``threshold`` delta compares a
frame threshold with a box-confidence threshold, so it is left out of
``max_abs_threshold_delta``.
"""

from __future__ import annotations

from typing import Any

from envs.params import DECODER_FIELDS

FORMAT = "sedtune.drift/1"


def _delta(prev: Any, cur: Any) -> float | int | None:
    if isinstance(prev, (int, float)) and isinstance(cur, (int, float)):
        d = cur - prev
        return d if isinstance(d, int) else round(float(d), 6)
    return None


def _decoder(entry: dict[str, Any]) -> str:
    return str(entry.get("decoder") or "frames")


def _fields(decoders: set[str]) -> list[str]:
    """The fields of the given decoders, in DECODER_FIELDS order (frames' first)."""
    out: list[str] = []
    for name, fields in DECODER_FIELDS.items():
        if name in decoders:
            out += [f for f in fields if f not in out]
    return out


def compute_drift(previous: dict[str, Any], current: dict[str, Any], previous_job_id: str,
                  job_id: str) -> dict[str, Any]:
    """The drift of ``current`` against ``previous`` (both :func:`service.results.read.summarize` outputs).

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
    decoder_changes: dict[str, Any] = {}
    max_thr = 0.0
    for c in sorted(set(pp) & set(cp)):
        da, db = _decoder(pp[c]), _decoder(cp[c])
        entry: dict[str, dict[str, Any]] = {"decoder": {"previous": da, "current": db, "delta": None}}
        for f in _fields({da, db}):
            if f != "decoder":
                a, b = pp[c].get(f), cp[c].get(f)
                entry[f] = {"previous": a, "current": b, "delta": _delta(a, b)}
        classes[c] = entry
        if any(e["previous"] != e["current"] for e in entry.values()):
            changed.append(c)
        if da != db:
            decoder_changes[c] = {"previous": da, "current": db}
            continue
        d = entry["threshold"]["delta"]
        if isinstance(d, (int, float)):
            max_thr = max(max_thr, abs(float(d)))
    hp, hc = previous.get("heldout_f"), current.get("heldout_f")
    return {
        "format": FORMAT, "previous_job_id": previous_job_id, "job_id": job_id,
        "heldout_f": {"previous": hp, "current": hc, "delta": _delta(hp, hc)},
        "changed_classes": changed, "max_abs_threshold_delta": round(max_thr, 6),
        "decoder_changes": decoder_changes,
        "classes": classes, "added_classes": sorted(set(cp) - set(pp)),
        "removed_classes": sorted(set(pp) - set(cp)),
    }
