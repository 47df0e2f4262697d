"""A short hash that tells whether two jobs ran on the same data."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from envs.groundtruth import read_text
from envs.scoreset import ScoreSet


def dataset_fingerprint(parts: Iterable[tuple[str, str, str | None]]) -> str:
    """Hash of shard names, sizes, clip names and schema, ground-truth and durations bytes.

    Args:
        parts: (scores folder, ground-truth file, durations file or None) per data part, in
            order (the tuning set, then a separate held-out set if any).

    Returns:
        16 hex digits.
    """
    h = hashlib.sha256()
    for scores_path, ground_truth, durations in parts:
        scores = ScoreSet.open(scores_path)
        h.update(repr((scores.classes, scores.frame_hop_s)).encode())
        for shard in scores.shards:
            h.update(os.path.basename(shard.path).encode())
            h.update(repr(scores.fs.get_file_info(shard.path).size).encode())
            h.update("\n".join(shard.filenames).encode())
        h.update(read_text(ground_truth).encode())
        if durations:
            h.update(read_text(durations).encode())
    return h.hexdigest()[:16]
