"""Apply a parameter file to a score set and write DCASE event TSVs."""

from __future__ import annotations

import os

from envs.decoders import score_set_events
from envs.errors import SedtuneInputError
from envs.events import ClassEvents
from envs.groundtruth import read_durations
from envs.params import ParamFile, check_hop, load_params
from envs.scoreset import ScoreSet


def apply_params(
    scores: ScoreSet, params: ParamFile, durations: dict[str, float] | None = None
) -> dict[str, ClassEvents]:
    """Per class, the events its decoder produces (clip indices into ``scores.filenames``).

    Args:
        scores: Opened score set.
        params: Validated parameters covering exactly the set's classes.
        durations: Optional clip durations (seconds) for clipping offsets.
    """
    return score_set_events(scores, params, durations)[0]


def write_events_tsv(path: str, filenames: list[str], events: dict[str, ClassEvents]) -> int:
    """Write events as ``filename onset offset event_label`` (full float precision).

    Times are written with Python's shortest round-trip repr so that reading the file back
    gives exactly the evaluated floats. Returns the number of events.
    """
    rows = []
    for label, ev in events.items():
        rows += ev.rows(filenames, label)
    order = {n: i for i, n in enumerate(filenames)}
    rows.sort(key=lambda r: (order[r[0]], r[1], r[3]))
    with open(path, "w", encoding="utf-8") as f:
        f.write("filename\tonset\toffset\tevent_label\n")
        for fn, a, b, lab in rows:
            f.write(f"{fn}\t{a!r}\t{b!r}\t{lab}\n")
    return len(rows)


def apply_to_tsv(scores_uri: str, params_path: str, out_path: str, durations_uri: str | None) -> int:
    """``sedtune apply``: read, validate, decode, write. Returns the number of events."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if os.path.isdir(out_path) or not os.path.isdir(out_dir):
        # checked first so that a bad --out does not fail after all the work
        raise SedtuneInputError(f"{out_path}: output must be a file in an existing directory")
    scores = ScoreSet.open(scores_uri)
    params = load_params(params_path)
    params.check_classes(scores.classes, params_path)
    check_hop(params, scores.frame_hop_s, params_path)
    durations = read_durations(durations_uri) if durations_uri else None
    if durations is not None:
        missing = [n for n in scores.filenames if n not in durations]
        if missing:
            raise SedtuneInputError(
                f"{durations_uri}: clip {missing[0]!r} of {scores_uri} has no duration "
                f"({len(missing)} such clip(s))"
            )
    events = apply_params(scores, params, durations)
    return write_events_tsv(out_path, scores.filenames, events)
