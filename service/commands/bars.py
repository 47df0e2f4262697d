"""Progress bars for long CLI work (tqdm on stderr, silent when stderr is not a terminal)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm:  # type: ignore[type-arg]
    """A tqdm bar on stderr; disabled when stderr is not a TTY (CI, pipes).

    Args:
        total: Expected number of units.
        desc: Label in front of the bar.
        unit: Unit name.
        **kwargs: Passed to tqdm.
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        **kwargs,
    )
