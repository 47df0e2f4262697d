"""Event lists as arrays: one class's events over many clips.

Events of one class are held as three parallel arrays (clip index, onset, offset in seconds),
sorted by clip and then onset. Clip indices refer to an ordered clip list held elsewhere
(the ground truth's clip order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ClassEvents:
    """One class's events, sorted by (clip, onset).

    Attributes:
        clip: Clip index of every event.
        onset_s: Onsets in seconds.
        offset_s: Offsets in seconds.
    """

    clip: I64
    onset_s: F64
    offset_s: F64

    @staticmethod
    def empty() -> ClassEvents:
        """No events."""
        return ClassEvents(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    @staticmethod
    def from_lists(clip: Iterable[int], onset_s: Iterable[float], offset_s: Iterable[float]) -> ClassEvents:
        """Build from sequences in any order (sorted here by clip, then onset, then offset)."""
        c = np.asarray(list(clip), dtype=np.int64)
        on = np.asarray(list(onset_s), dtype=np.float64)
        off = np.asarray(list(offset_s), dtype=np.float64)
        order = np.lexsort((off, on, c))
        return ClassEvents(c[order], on[order], off[order])

    def __len__(self) -> int:
        return int(self.clip.shape[0])

    def select_clips(self, keep: npt.NDArray[np.bool_], new_index: I64) -> ClassEvents:
        """Keep events of clips where ``keep[clip]``, renumbering clips by ``new_index``."""
        m = keep[self.clip]
        return ClassEvents(new_index[self.clip[m]], self.onset_s[m], self.offset_s[m])

    def rows(self, filenames: Sequence[str], label: str) -> list[tuple[str, float, float, str]]:
        """As (filename, onset, offset, label) tuples."""
        return [
            (filenames[int(c)], float(a), float(b), label)
            for c, a, b in zip(self.clip, self.onset_s, self.offset_s, strict=True)
        ]
