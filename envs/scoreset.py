"""Reading a score set: shard footers and clip names first, then class columns on demand.

The format is :mod:`envs.scoreformat`'s; :class:`ScoreSet` opens a set (every shard's
header validated), :class:`ClassScores` is one class's frames of all its clips.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from envs.errors import SedtuneInputError
from envs.scorecache import resolve_scores
from envs.scoreformat import (
    FORMAT,
    META_CLASSES,
    META_FORMAT,
    META_HOP,
    RESERVED_COLUMNS,
    check_classes,
    check_scores,
    resolve,
)

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


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

        Without ``shard_paths``, ``uri`` may also be a sed_scores_eval TSV folder or an
        ``.npz``: it is converted once into a cached score set, which is what is opened
        (:func:`envs.scorecache.resolve_scores`; :attr:`uri` is then the cached set's path).

        Args:
            uri: Directory of ``*.parquet`` shards (path or URI), TSV folder or ``.npz``.
            shard_paths: Restrict to these shard paths (as listed by another ScoreSet).

        Returns:
            The opened set.

        Raises:
            SedtuneInputError: Missing directory, no shards, corrupt or foreign Parquet,
                shards that disagree on classes or hop, duplicate clips; a TSV folder or
                ``.npz`` that ``sedtune import`` would refuse (its error, naming the file).
        """
        if shard_paths is None:
            uri = resolve_scores(uri)
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
                raise SedtuneInputError(
                    f"{uri}: no .parquet shards in the score set (nor .tsv score files to import)"
                )
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


def open_shards(uri: str, shard_indices: Sequence[int], shard_paths: Sequence[str] | None = None) -> ScoreSet:
    """Open some shards of a score set (e.g. the shards one environment replica reads).

    Args:
        uri: The set's directory (path or URI).
        shard_indices: Shards to read (indices into the set's shard list), in this order.
        shard_paths: The set's shard paths in order, if known (then only the chosen shards'
            headers are read; otherwise every shard's clip names are listed first).

    Returns:
        The set restricted to the chosen shards.

    Raises:
        SedtuneInputError: No such shard, or what :meth:`ScoreSet.open` raises.
    """
    if shard_paths is not None:
        bad = [i for i in shard_indices if not 0 <= i < len(shard_paths)]
        if bad:
            raise SedtuneInputError(f"{uri}: no shard {bad[0]} (the set has {len(shard_paths)})")
        return ScoreSet.open(uri, [shard_paths[i] for i in shard_indices])
    full = ScoreSet.open(uri)
    bad = [i for i in shard_indices if not 0 <= i < len(full.shards)]
    if bad:
        raise SedtuneInputError(f"{uri}: no shard {bad[0]} (the set has {len(full.shards)})")
    return full.subset(list(shard_indices))


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
