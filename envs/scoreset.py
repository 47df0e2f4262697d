"""Score sets: frame-level class probabilities as Parquet shards.

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
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from envs.errors import SedtuneInputError

LOG = logging.getLogger(__name__)

FORMAT = "sedtune.scores/1"
META_FORMAT = b"sedtune.format"
META_HOP = b"sedtune.frame_hop_s"
META_CLASSES = b"sedtune.classes"
RESERVED_COLUMNS = ("filename", "n_frames")

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


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
    import os

    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _schema(classes: Sequence[str], frame_hop_s: float) -> pa.Schema:
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


class ScoreSetWriter:
    """Streams clips into Parquet shards of at most ``clips_per_shard`` rows.

    Memory holds one shard at most, so sets of any size can be written clip by clip.

    Args:
        uri: Output directory (created); local path or filesystem URI.
        classes: Class labels, in column order.
        frame_hop_s: Seconds between frame onsets (> 0).
        clips_per_shard: Rows per shard file.
    """

    def __init__(
        self, uri: str, classes: Sequence[str], frame_hop_s: float, clips_per_shard: int = 2000
    ) -> None:
        if not (frame_hop_s > 0 and math.isfinite(frame_hop_s)):
            raise SedtuneInputError(f"frame_hop_s must be > 0, but got {frame_hop_s=}")
        if clips_per_shard < 1:
            raise SedtuneInputError(f"clips_per_shard must be >= 1, but got {clips_per_shard=}")
        self.uri = uri
        self.classes = check_classes(classes, uri)
        self.frame_hop_s = float(frame_hop_s)
        self.clips_per_shard = clips_per_shard
        self.fs, self.root = resolve(uri)
        self.fs.create_dir(self.root, recursive=True)
        self.schema = _schema(self.classes, self.frame_hop_s)
        self._names: list[str] = []
        self._mats: list[npt.NDArray[np.float32]] = []
        self._seen: set[str] = set()
        self.n_shards = 0
        self.n_clips = 0

    def add(self, filename: str, scores: npt.ArrayLike) -> None:
        """Add one clip.

        Args:
            filename: Clip name as in the ground truth (with extension).
            scores: Probabilities, shape (frames, classes), in [0, 1].

        Raises:
            SedtuneInputError: On a duplicate clip, a wrong shape or bad values.
        """
        mat = np.asarray(scores, dtype=np.float32)
        where = f"{self.uri}, clip {filename!r}"
        if filename in self._seen:
            raise SedtuneInputError(f"{where}: duplicate clip")
        if mat.ndim != 2 or mat.shape[1] != len(self.classes):
            raise SedtuneInputError(
                f"{where}: scores must have shape (frames, {len(self.classes)}), but got {mat.shape}"
            )
        check_scores(mat, where)
        self._seen.add(filename)
        self._names.append(filename)
        self._mats.append(mat)
        if len(self._names) >= self.clips_per_shard:
            self.flush()

    def add_many(self, clips: Iterable[tuple[str, npt.ArrayLike]]) -> None:
        """Add clips from an iterable of (filename, scores)."""
        for name, mat in clips:
            self.add(name, mat)

    def flush(self) -> None:
        """Write the buffered clips as one shard."""
        if not self._names:
            return
        lengths = np.array([m.shape[0] for m in self._mats], dtype=np.int32)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        stacked = np.concatenate(self._mats, axis=0)
        arrays: list[pa.Array] = [pa.array(self._names, pa.string()), pa.array(lengths)]
        pa_offsets = pa.array(offsets)
        for k in range(len(self.classes)):
            col = np.ascontiguousarray(stacked[:, k])
            arrays.append(pa.ListArray.from_arrays(pa_offsets, pa.array(col)))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        path = f"{self.root}/part-{self.n_shards:05d}.parquet"
        with self.fs.open_output_stream(path) as sink:
            # Dictionary encoding only pays for names: noisy float columns would write a large
            # dictionary and fall back to plain encoding, making shards bigger and slower.
            pq.write_table(table, sink, compression="zstd", use_dictionary=["filename"])
        self.n_shards += 1
        self.n_clips += len(self._names)
        self._names, self._mats = [], []

    def close(self) -> ScoreSetWriter:
        """Flush the last shard; returns self."""
        self.flush()
        if self.n_clips == 0:
            raise SedtuneInputError(f"{self.uri}: no clips were written")
        return self

    def abort(self) -> None:
        """Delete the shards this writer wrote and drop its buffer (after a failed write).

        Shards already flushed would otherwise look like a complete, valid set.
        """
        self._names, self._mats = [], []
        for i in range(self.n_shards):
            path = f"{self.root}/part-{i:05d}.parquet"
            try:
                self.fs.delete_file(path)
            except OSError:
                LOG.warning("could not delete the partial shard %s", path)
        self.n_shards = self.n_clips = 0

    def __enter__(self) -> ScoreSetWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class ClassScores:
    """One class's frame probabilities for a list of clips, ragged.

    Attributes:
        label: Class label.
        values: Concatenated probabilities of all clips, float32.
        offsets: ``values[offsets[i]:offsets[i+1]]`` are clip i's frames; length n_clips + 1.
    """

    label: str
    values: FloatArray
    offsets: IndexArray

    def clip(self, i: int) -> FloatArray:
        """Frames of clip i."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def take(self, order: IndexArray) -> ClassScores:
        """Reorder (or subset) the clips."""
        starts, ends = self.offsets[order], self.offsets[order + 1]
        lengths = ends - starts
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if len(order) == 0:
            return ClassScores(self.label, self.values[:0], offsets)
        idx = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return ClassScores(self.label, self.values[idx], offsets)


@dataclass(frozen=True)
class Shard:
    """One shard's path and its clip names."""

    path: str
    filenames: tuple[str, ...]


class ScoreSet:
    """A score set opened for reading; reads footers and clip names only.

    Use :meth:`open`. Shards are read with pyarrow on whatever process calls the read methods,
    so Ray workers read their own shards; nothing passes through the driver.

    Attributes:
        uri: The set's directory path or URI.
        classes: Class labels in column order.
        frame_hop_s: Seconds between frame onsets.
        shards: Shards in name order with their clip names.
    """

    def __init__(
        self,
        uri: str,
        fs: pafs.FileSystem,
        classes: list[str],
        frame_hop_s: float,
        shards: list[Shard],
    ) -> None:
        self.uri = uri
        self.fs = fs
        self.classes = classes
        self.frame_hop_s = frame_hop_s
        self.shards = shards

    @classmethod
    def open(cls, uri: str, shard_paths: Sequence[str] | None = None) -> ScoreSet:
        """Open a score set and validate its shards' schemas and clip names.

        Args:
            uri: Directory of ``*.parquet`` shards (path or URI).
            shard_paths: Restrict to these shard paths (as listed by another ScoreSet).

        Returns:
            The opened set.

        Raises:
            SedtuneInputError: Missing directory, no shards, corrupt or foreign Parquet,
                shards that disagree on classes or hop, duplicate clips.
        """
        fs, root = resolve(uri)
        if shard_paths is None:
            info = fs.get_file_info(root)
            if info.type == pafs.FileType.NotFound:
                raise SedtuneInputError(f"{uri}: score set not found")
            if info.type == pafs.FileType.File:
                paths = [root]
            else:
                sel = pafs.FileSelector(root, recursive=False)
                paths = sorted(i.path for i in fs.get_file_info(sel) if i.path.endswith(".parquet"))
            if not paths:
                raise SedtuneInputError(f"{uri}: no .parquet shards in the score set")
        else:
            paths = list(shard_paths)
        classes: list[str] | None = None
        hop: float | None = None
        shards: list[Shard] = []
        seen: dict[str, str] = {}
        for path in paths:
            s_classes, s_hop, names = _read_shard_header(fs, path)
            if classes is None:
                classes, hop = s_classes, s_hop
            elif s_classes != classes:
                raise SedtuneInputError(
                    f"{path}: classes {s_classes} differ from {classes} in {shards[0].path}"
                )
            elif s_hop != hop:
                raise SedtuneInputError(f"{path}: frame_hop_s {s_hop} differs from {hop} in {shards[0].path}")
            for n in names:
                if n in seen:
                    raise SedtuneInputError(f"{path}: duplicate clip {n!r} (also in {seen[n]})")
                seen[n] = path
            shards.append(Shard(path, tuple(names)))
        assert classes is not None and hop is not None  # paths is non-empty
        return cls(uri, fs, classes, hop, shards)

    @property
    def filenames(self) -> list[str]:
        """All clip names, shard by shard."""
        return [n for s in self.shards for n in s.filenames]

    def subset(self, shard_indices: Sequence[int]) -> ScoreSet:
        """A view restricted to some shards (e.g. the shards one env replica reads)."""
        return ScoreSet(
            self.uri,
            self.fs,
            self.classes,
            self.frame_hop_s,
            [self.shards[i] for i in shard_indices],
        )

    def read_class(self, label: str) -> ClassScores:
        """Read one class column from every shard (column projection), validated.

        Args:
            label: Class label.

        Returns:
            The class's scores for :attr:`filenames`, in that order.

        Raises:
            SedtuneInputError: Unknown class, bad values, or list lengths that disagree with
                ``n_frames``.
        """
        if label not in self.classes:
            raise SedtuneInputError(f"{self.uri}: unknown class {label!r}; classes: {self.classes}")
        values: list[npt.NDArray[np.float32]] = []
        lengths: list[npt.NDArray[np.int64]] = []
        for shard in self.shards:
            table = _read_columns(self.fs, shard.path, ["n_frames", label])
            n_frames_col = table.column("n_frames")
            if n_frames_col.null_count:
                row = int(np.flatnonzero(n_frames_col.is_null().to_numpy())[0])
                raise SedtuneInputError(
                    f"{shard.path}, clip {shard.filenames[row]!r}: n_frames is missing (null)"
                )
            n_frames = n_frames_col.to_numpy().astype(np.int64)
            col = table.column(label).combine_chunks()
            if col.null_count:
                row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise SedtuneInputError(
                    f"{shard.path}, clip {shard.filenames[row]!r}, class {label!r}: scores are missing (null)"
                )
            col_len = np.diff(col.offsets.to_numpy()).astype(np.int64)
            mismatch = np.flatnonzero(col_len != n_frames)
            if len(mismatch):
                r = int(mismatch[0])
                raise SedtuneInputError(
                    f"{shard.path}, clip {shard.filenames[r]!r}, class {label!r}: "
                    f"{col_len[r]} frames, but the row has n_frames={n_frames[r]} "
                    "(class lists differ in length)"
                )
            flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            try:
                check_scores(flat, f"{shard.path}, class {label!r}")
            except SedtuneInputError:
                _raise_bad_clip(flat, col_len, shard, label)
            values.append(flat)
            lengths.append(col_len)
        all_len = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(all_len) + 1, dtype=np.int64)
        np.cumsum(all_len, out=offsets[1:])
        return ClassScores(label, np.concatenate(values), offsets)

    def read_matrices(self) -> dict[str, FloatArray]:
        """Read every clip as a (frames, classes) matrix. For small sets and for `apply`."""
        cols = [self.read_class(c) for c in self.classes]
        out: dict[str, FloatArray] = {}
        for i, name in enumerate(self.filenames):
            out[name] = np.stack([c.clip(i) for c in cols], axis=1)
        return out


def _raise_bad_clip(flat: FloatArray, lengths: IndexArray, shard: Shard, label: str) -> None:
    """Re-raise a value error naming the clip that holds the first bad score."""
    bad = ~np.isfinite(flat) | (flat < 0) | (flat > 1)
    pos = int(np.flatnonzero(bad)[0])
    row = int(np.searchsorted(np.cumsum(lengths), pos, side="right"))
    check_scores(flat[pos : pos + 1], f"{shard.path}, clip {shard.filenames[row]!r}, class {label!r}")


def _read_shard_header(fs: pafs.FileSystem, path: str) -> tuple[list[str], float, list[str]]:
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            meta = schema.metadata or {}
            if meta.get(META_FORMAT) != FORMAT.encode():
                raise SedtuneInputError(
                    f"{path}: not a sedtune score shard (schema metadata {META_FORMAT.decode()} "
                    f"is {meta.get(META_FORMAT)!r}, expected {FORMAT!r})"
                )
            try:
                classes = json.loads(meta[META_CLASSES])
            except (KeyError, ValueError) as e:
                raise SedtuneInputError(
                    f"{path}: schema metadata {META_CLASSES.decode()} is missing or not JSON ({e})"
                ) from e
            if not isinstance(classes, list):
                raise SedtuneInputError(
                    f"{path}: schema metadata {META_CLASSES.decode()} must be a JSON list, got {classes!r}"
                )
            try:
                hop = float(meta[META_HOP])
            except (KeyError, ValueError):
                hop = math.nan
            if not (hop > 0 and math.isfinite(hop)):
                raise SedtuneInputError(
                    f"{path}: schema metadata {META_HOP.decode()} must be a number > 0, "
                    f"got {meta.get(META_HOP)!r}"
                )
            check_classes(classes, path)
            for c in RESERVED_COLUMNS + tuple(classes):
                if c not in schema.names:
                    raise SedtuneInputError(f"{path}: column {c!r} is missing")
            for c in classes:
                t = schema.field(c).type
                if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not (
                    pa.types.is_floating(t.value_type)
                ):
                    raise SedtuneInputError(f"{path}: column {c!r} must be list<float32>, got {t}")
            names_col = pf.read(columns=["filename"]).column("filename")
    except SedtuneInputError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise SedtuneInputError(f"{path}: not a readable Parquet file ({_one_line(e)})") from e
    if names_col.null_count:
        raise SedtuneInputError(f"{path}: a row has no filename")
    names = [str(n) for n in names_col.to_pylist()]
    return list(classes), hop, names


def _read_columns(fs: pafs.FileSystem, path: str, columns: list[str]) -> pa.Table:
    try:
        with fs.open_input_file(path) as f:
            return pq.read_table(f, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise SedtuneInputError(f"{path}: not a readable Parquet file ({_one_line(e)})") from e


def _one_line(e: BaseException) -> str:
    """An exception's text on one line (Arrow messages can span several)."""
    return " ".join(str(e).split())
