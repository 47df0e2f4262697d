"""Errors raised for bad user input.

Every error a user can cause (a malformed file, a clip missing from the ground truth, an
invalid parameter) is a :class:`SedtuneInputError` whose message names the file, clip, class
or field and states the rule that was broken. The CLI prints the message on one line and exits
non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class SedtuneInputError(ValueError):
    """Bad input: the message names what is wrong and where.

    Args:
        message: One line naming the file, clip, class or field and the rule broken.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def where(path: object, detail: str | None = None) -> str:
    """Format a location prefix such as ``scores/part-00000.parquet, clip 'a.wav'``.

    Args:
        path: File path or URI.
        detail: Optional extra location (row, clip, column).

    Returns:
        The location text, without trailing punctuation.
    """
    text = str(path)
    return f"{text}, {detail}" if detail else text
