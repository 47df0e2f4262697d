"""Writing a score set: clips streamed into Parquet shards (format: :mod:`envs.scoreformat`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from envs.errors import SedtuneInputError
from envs.scoreformat import check_classes, check_scores, resolve, shard_schema

LOG = logging.getLogger(__name__)


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
        self.schema = shard_schema(self.classes, self.frame_hop_s)
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
