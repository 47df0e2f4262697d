"""The on-disk format of a score set: schema, metadata keys and the value rules.

A score set is a directory (local path or any pyarrow filesystem URI such as ``s3://``) of
Parquet shards named ``part-NNNNN.parquet``. Each shard holds one row per clip:

- ``filename`` (string): the clip's name as in the ground truth, with extension;
- ``n_frames`` (int32): the clip's number of frames;
- one ``list<float32>`` column per class, named after the class, holding that class's
  frame probabilities (length ``n_frames``).

The schema metadata carries ``sedtune.format`` (``sedtune.scores/1``),
``sedtune.frame_hop_s`` (seconds between frame onsets) and ``sedtune.classes`` (JSON list).
One column per class lets a worker read one class without reading the others (column
projection), which is what keeps 400-class sets cheap.

Reading is :mod:`envs.scoreset`, writing :mod:`envs.scorewriter`; both follow the rules here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.fs as pafs

from envs.errors import SedtuneInputError

FORMAT = "sedtune.scores/1"
META_FORMAT = b"sedtune.format"
META_HOP = b"sedtune.frame_hop_s"
META_CLASSES = b"sedtune.classes"
RESERVED_COLUMNS = ("filename", "n_frames")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Split a path or URI into a pyarrow filesystem and a path on it.

    Args:
        uri: Local path or filesystem URI (``file://``, ``s3://``, ``gs://``, ``hdfs://``).

    Returns:
        The filesystem and the path within it.
    """
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def shard_schema(classes: Sequence[str], frame_hop_s: float) -> pa.Schema:
    """The Arrow schema of a shard, with the format's metadata.

    Args:
        classes: Class labels, in column order.
        frame_hop_s: Seconds between frame onsets.

    Returns:
        ``filename``, ``n_frames`` and one ``list<float32>`` column per class.
    """
    fields = [pa.field("filename", pa.string(), nullable=False), pa.field("n_frames", pa.int32())]
    fields += [pa.field(c, pa.list_(pa.float32())) for c in classes]
    meta = {
        META_FORMAT: FORMAT.encode(),
        META_HOP: repr(float(frame_hop_s)).encode(),
        META_CLASSES: json.dumps(list(classes)).encode(),
    }
    return pa.schema(fields, metadata=meta)


def check_classes(classes: Sequence[str], source: str) -> list[str]:
    """Validate a class list: non-empty, unique, no reserved or blank names.

    Args:
        classes: Class labels in column order.
        source: File or set named in error messages.

    Returns:
        The classes as a list.

    Raises:
        SedtuneInputError: If the list breaks a rule.
    """
    out = [str(c) for c in classes]
    if not out:
        raise SedtuneInputError(f"{source}: the class list is empty")
    seen: set[str] = set()
    for c in out:
        if not c.strip():
            raise SedtuneInputError(f"{source}: a class name is blank")
        if c in RESERVED_COLUMNS:
            raise SedtuneInputError(f"{source}: class name {c!r} is reserved")
        if c in seen:
            raise SedtuneInputError(f"{source}: class {c!r} appears twice")
        seen.add(c)
    return out


def check_scores(values: npt.NDArray[Any], where: str) -> None:
    """Require finite probabilities in [0, 1].

    Args:
        values: Probabilities of any shape.
        where: Location named in the error (file, clip, class).

    Raises:
        SedtuneInputError: On NaN, infinity or a value outside [0, 1].
    """
    if values.size == 0:
        return
    finite = np.isfinite(values)
    if not finite.all():
        bad = values[~finite].flat[0]
        raise SedtuneInputError(f"{where}: score {bad} is not finite (NaN or inf)")
    # numpy scalars print float32 values as written (-0.1), not widened (-0.10000000149011612)
    lo, hi = values.min(), values.max()
    if lo < 0.0 or hi > 1.0:
        bad_value = lo if lo < 0.0 else hi
        raise SedtuneInputError(f"{where}: score {bad_value!s} is outside [0, 1]")
