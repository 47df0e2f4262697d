"""Per-class count totals shared by the metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Counts:
    """One class's totals over all evaluated clips.

    Attributes:
        nref: Reference events (event-based) or active reference segments (segment-based).
        nsys: System events or active system segments.
        ntp: True positives (matched pairs or segments active in both).
    """

    nref: int
    nsys: int
    ntp: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.nref + other.nref, self.nsys + other.nsys, self.ntp + other.ntp)

    @staticmethod
    def zero() -> Counts:
        """All zero."""
        return Counts(0, 0, 0)
