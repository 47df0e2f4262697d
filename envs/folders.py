"""Fresh folders for staging: created beside their target so that a rename publishes them."""

from __future__ import annotations

import os
import secrets


def fresh_dir(parent: str, prefix: str) -> str:
    """Create and return a new folder ``parent/<prefix><8 hex digits>``.

    Unlike :func:`tempfile.mkdtemp` (mode 0700) the folder gets the default mode, as the
    target it will replace would.

    Args:
        parent: Existing folder to create it in.
        prefix: Start of the folder's name.

    Raises:
        OSError: The folder cannot be created (other than a name clash, which is retried).
    """
    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
