"""DCASE ground truth and durations TSV files.

Ground truth: a TSV with header ``filename onset offset event_label`` (seconds). A row with an
empty label (and empty times) declares a clip with no event. Durations: ``filename duration``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow.fs as pafs

from envs.errors import SedtuneInputError
from envs.events import ClassEvents
from envs.scoreformat import resolve

GT_COLUMNS = ("filename", "onset", "offset", "event_label")


def read_text(uri: str) -> str:
    """Read a small text file from a local path or filesystem URI.

    Raises:
        SedtuneInputError: If the file does not exist or cannot be decoded as UTF-8.
    """
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise SedtuneInputError(f"{uri}: file not found")
    try:
        with fs.open_input_stream(path) as f:
            return bytes(f.read()).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SedtuneInputError(f"{uri}: not a UTF-8 text file ({e})") from e


def _rows(uri: str, header: Sequence[str]) -> list[tuple[int, list[str]]]:
    text = read_text(uri)
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    lines = [(i + 1, r) for i, r in enumerate(reader) if r and any(x.strip() for x in r)]
    if not lines:
        raise SedtuneInputError(f"{uri}: file is empty")
    first = [x.strip() for x in lines[0][1]]
    if first[: len(header)] != list(header):
        raise SedtuneInputError(f"{uri}, line 1: header must be {' '.join(header)!r}, got {first}")
    return lines[1:]


def _float(text: str, uri: str, line: int, field: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise SedtuneInputError(f"{uri}, line {line}: {field} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise SedtuneInputError(f"{uri}, line {line}: {field} {text!r} is not finite")
    return v


@dataclass(frozen=True)
class GroundTruth:
    """Reference events for an ordered list of clips.

    Attributes:
        filenames: Every clip of the ground truth, in first-seen order.
        events: Per class label, that class's events (clip indices into ``filenames``).
    """

    filenames: tuple[str, ...]
    events: dict[str, ClassEvents]

    @property
    def labels(self) -> list[str]:
        """Labels that occur, sorted."""
        return sorted(self.events)

    def index(self) -> dict[str, int]:
        """Clip name to index."""
        return {n: i for i, n in enumerate(self.filenames)}

    def class_events(self, label: str) -> ClassEvents:
        """Events of one class (empty if the class never occurs)."""
        return self.events.get(label, ClassEvents.empty())

    def subset(self, clip_indices: npt.NDArray[np.int64]) -> GroundTruth:
        """The ground truth of some clips, renumbered in the given order."""
        keep = np.zeros(len(self.filenames), dtype=bool)
        keep[clip_indices] = True
        new_index = np.full(len(self.filenames), -1, dtype=np.int64)
        new_index[clip_indices] = np.arange(len(clip_indices))
        events = {}
        for k, ev in self.events.items():
            sub = ev.select_clips(keep, new_index)
            order = np.lexsort((sub.offset_s, sub.onset_s, sub.clip))
            events[k] = ClassEvents(sub.clip[order], sub.onset_s[order], sub.offset_s[order])
        return GroundTruth(tuple(self.filenames[i] for i in clip_indices), events)

    @staticmethod
    def from_rows(rows: Sequence[tuple[str, float | None, float | None, str | None]]) -> GroundTruth:
        """Build from (filename, onset, offset, label) rows; label None marks an empty clip."""
        names: dict[str, int] = {}
        per: dict[str, tuple[list[int], list[float], list[float]]] = {}
        for fn, on, off, lab in rows:
            idx = names.setdefault(fn, len(names))
            if lab is None or on is None or off is None:
                continue
            c, a, b = per.setdefault(lab, ([], [], []))
            c.append(idx)
            a.append(on)
            b.append(off)
        events = {k: ClassEvents.from_lists(*v) for k, v in per.items()}
        return GroundTruth(tuple(names), events)


def read_ground_truth(uri: str) -> GroundTruth:
    """Read a DCASE ground-truth TSV.

    Args:
        uri: Path or URI of the TSV (``filename onset offset event_label``).

    Returns:
        The ground truth; clips listed only with an empty label have no events.

    Raises:
        SedtuneInputError: Bad header, wrong column count, non-numeric, negative or reversed
            times, a label without times.
    """
    rows: list[tuple[str, float | None, float | None, str | None]] = []
    for line, r in _rows(uri, GT_COLUMNS):
        if len(r) == 1 or (len(r) >= 2 and all(not x.strip() for x in r[1:])):
            rows.append((r[0].strip(), None, None, None))
            continue
        if len(r) != 4:
            raise SedtuneInputError(f"{uri}, line {line}: expected 4 tab-separated fields, got {len(r)}")
        fn, on_t, off_t, lab = (x.strip() for x in r)
        if not fn:
            raise SedtuneInputError(f"{uri}, line {line}: filename is empty")
        if not lab:
            if on_t or off_t:
                raise SedtuneInputError(f"{uri}, line {line}: event has times but no event_label")
            rows.append((fn, None, None, None))
            continue
        on = _float(on_t, uri, line, "onset")
        off = _float(off_t, uri, line, "offset")
        if on < 0:
            raise SedtuneInputError(f"{uri}, line {line}: onset {on} is negative")
        if off < on:
            raise SedtuneInputError(f"{uri}, line {line}: offset {off} is before onset {on}")
        rows.append((fn, on, off, lab))
    return GroundTruth.from_rows(rows)


def read_durations(uri: str) -> dict[str, float]:
    """Read a durations TSV (``filename duration``, seconds).

    Raises:
        SedtuneInputError: Bad header, duplicate clip, non-positive or non-numeric duration.
    """
    out: dict[str, float] = {}
    for line, r in _rows(uri, ("filename", "duration")):
        if len(r) != 2:
            raise SedtuneInputError(f"{uri}, line {line}: expected 2 tab-separated fields, got {len(r)}")
        fn = r[0].strip()
        d = _float(r[1].strip(), uri, line, "duration")
        if d <= 0:
            raise SedtuneInputError(f"{uri}, line {line}: duration {d} must be > 0")
        if fn in out:
            raise SedtuneInputError(f"{uri}, line {line}: duplicate clip {fn!r}")
        out[fn] = d
    return out


def write_ground_truth(path: str, filenames: Sequence[str], events: dict[str, ClassEvents]) -> None:
    """Write a DCASE ground-truth TSV; clips without events get an empty-label row.

    Args:
        path: Local output path.
        filenames: Clip names; ``events`` index into this list.
        events: Per class, its events.
    """
    rows: list[tuple[int, float, float, str]] = []
    has = np.zeros(len(filenames), dtype=bool)
    for label, ev in events.items():
        has[ev.clip] = True
        rows += [
            (int(c), float(a), float(b), label)
            for c, a, b in zip(ev.clip, ev.onset_s, ev.offset_s, strict=True)
        ]
    rows.sort()
    with open(path, "w", encoding="utf-8") as f:
        f.write("filename\tonset\toffset\tevent_label\n")
        for c, a, b, lab in rows:
            f.write(f"{filenames[c]}\t{a:.3f}\t{b:.3f}\t{lab}\n")
        for i in np.flatnonzero(~has):
            f.write(f"{filenames[int(i)]}\t\t\t\n")


def write_durations(path: str, durations: dict[str, float]) -> None:
    """Write a durations TSV."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("filename\tduration\n")
        for k, v in durations.items():
            f.write(f"{k}\t{v:.3f}\n")
