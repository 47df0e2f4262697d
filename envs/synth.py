"""Synthetic SED model outputs with ground truth, deterministic by seed, streamed to disk.

:func:`generate` writes a score set (Parquet shards, see :mod:`envs.scoreformat`), a DCASE
ground-truth TSV and a durations TSV that look like the validation outputs of a real sound
event detection model, so that the post-processing stack has something to fix. What is
generated is set by :class:`envs.synth_config.SynthConfig`; how events and scores are drawn
is :mod:`envs.synth_scores`.

Memory: clips are generated in chunks of about :data:`envs.synth_config.CELLS_PER_CHUNK`
(frame, class) cells and written at once (scores through
:class:`envs.scorewriter.ScoreSetWriter`, TSV rows appended to the open files), so sets of
any size stream through a bounded amount of memory: one chunk plus the writer's shard buffer
(about 3 x clips_per_shard x classes x frames x 4 bytes while it flushes).

Determinism: class properties come from ``SeedSequence(seed, spawn_key=(0, class index))``,
the confusion cycle from ``spawn_key=(2,)`` and chunk ``i`` from ``spawn_key=(1, i)``. The
chunk size depends only on the number of classes and frames (:attr:`SynthConfig.chunk_clips`),
so the same config gives identical scores and ground truth (given the same numpy and scipy
versions; numpy's SIMD math may differ in the last bit between CPU families), and
``clips_per_shard`` does not change any value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import numpy as np
import pyarrow.fs as pafs

from envs.errors import SedtuneInputError
from envs.scoreformat import resolve
from envs.scorewriter import ScoreSetWriter
from envs.synth_config import SynthConfig
from envs.synth_scores import ChunkEvents, chunk_scores, class_profiles, sample_events

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate` wrote.

    Attributes:
        scores_uri: Score set directory (Parquet shards).
        ground_truth_path: DCASE ground-truth TSV.
        durations_path: Durations TSV.
        n_clips: Clips written.
        n_events: Ground-truth events written.
        classes: Class labels in column order.
    """

    scores_uri: str
    ground_truth_path: str
    durations_path: str
    n_clips: int
    n_events: int
    classes: list[str]


def _gt_text(names: list[str], classes: list[str], ev: ChunkEvents) -> tuple[str, int]:
    """Ground-truth rows of a chunk, clip by clip (events by onset), and the event count.

    A clip without events gets one empty-label row at its place in the clip order.
    """
    c, k, s = np.nonzero(ev.valid)
    on, off = ev.onset_s[c, k, s], ev.offset_s[c, k, s]
    label_rank = np.argsort(np.argsort(np.asarray(classes)))
    has = np.zeros(len(names), dtype=bool)
    has[c] = True
    blank = np.flatnonzero(~has)
    clip = np.concatenate([c, blank])
    key_on = np.concatenate([on, np.full(len(blank), -1.0)])
    key_off = np.concatenate([off, np.full(len(blank), -1.0)])
    key_lab = np.concatenate([label_rank[k], np.zeros(len(blank), dtype=np.int64)])
    order = np.lexsort((key_lab, key_off, key_on, clip))
    n_ev = len(c)
    lines = [
        f"{names[clip[i]]}\t{key_on[i]:.3f}\t{key_off[i]:.3f}\t{classes[k[i]]}\n"
        if i < n_ev
        else f"{names[clip[i]]}\t\t\t\n"
        for i in order.tolist()
    ]
    return "".join(lines), n_ev


def _open_text(fs: pafs.FileSystem, path: str, header: str) -> IO[bytes]:
    stream: IO[bytes] = fs.open_output_stream(path, compression=None)
    stream.write(header.encode())
    return stream


def _prepare_out_dir(out_dir: str, overwrite: bool) -> tuple[pafs.FileSystem, str]:
    """Create out_dir; refuse (or, with overwrite, clear) shards left by an earlier run."""
    fs, root = resolve(out_dir)
    if fs.get_file_info(root).type == pafs.FileType.File:
        raise SedtuneInputError(f"{out_dir}: is a file; synth writes into a directory")
    if not overwrite:
        # Never replace a user's own ground truth or durations.
        for name in ("ground_truth.tsv", "durations.tsv"):
            if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound:
                raise SedtuneInputError(
                    f"{out_dir}/{name} already exists; choose an empty out_dir or pass overwrite=True"
                )
    fs.create_dir(root, recursive=True)
    scores = f"{root}/scores"
    if fs.get_file_info(scores).type == pafs.FileType.Directory:
        old = [i.path for i in fs.get_file_info(pafs.FileSelector(scores)) if i.path.endswith(".parquet")]
        if old and not overwrite:
            # Stale shards would join the new set and corrupt it.
            raise SedtuneInputError(
                f"{out_dir}/scores already holds {len(old)} shard(s); choose an empty "
                "out_dir or pass overwrite=True"
            )
        for path in old:
            fs.delete_file(path)
    return fs, root


def generate(
    out_dir: str,
    config: SynthConfig,
    progress: Callable[[int], None] | None = None,
    *,
    overwrite: bool = False,
) -> SynthResult:
    """Write a synthetic score set and its ground truth, streaming chunk by chunk.

    Writes ``out_dir/scores/`` (Parquet shards), ``out_dir/ground_truth.tsv`` and
    ``out_dir/durations.tsv``. Clips are named ``synth_000000.wav``, ``synth_000001.wav``, ...

    Args:
        out_dir: Output directory (local path or pyarrow filesystem URI), created if missing.
        config: What to generate.
        progress: Called with the number of clips just written, after every chunk.
        overwrite: Delete Parquet shards already in ``out_dir/scores`` instead of refusing.

    Returns:
        Where the files are and what they hold.

    Raises:
        SedtuneInputError: If ``out_dir/scores`` holds shards and ``overwrite`` is False.
    """
    fs, root = _prepare_out_dir(out_dir, overwrite)
    classes = config.classes
    prof = class_profiles(config)
    scores_uri = f"{out_dir.rstrip('/')}/scores"
    LOG.info(
        "synth: %d clips x %d classes x %d frames into %s (seed %d)",
        config.n_clips,
        len(classes),
        config.n_frames,
        out_dir,
        config.seed,
    )
    writer = ScoreSetWriter(scores_uri, classes, config.frame_hop_s, config.clips_per_shard)
    n_events = 0
    step = config.chunk_clips
    gt = _open_text(fs, f"{root}/ground_truth.tsv", "filename\tonset\toffset\tevent_label\n")
    dur = _open_text(fs, f"{root}/durations.tsv", "filename\tduration\n")
    try:
        for chunk, first in enumerate(range(0, config.n_clips, step)):
            n = min(step, config.n_clips - first)
            rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, chunk)))
            ev = sample_events(rng, config, prof, n)
            probs = chunk_scores(rng, config, prof, ev)
            names = [f"synth_{i:06d}.wav" for i in range(first, first + n)]
            for name, mat in zip(names, probs, strict=True):
                writer.add(name, mat)
            text, n_ev = _gt_text(names, classes, ev)
            gt.write(text.encode())
            dur.write("".join(f"{x}\t{config.clip_duration_s:.3f}\n" for x in names).encode())
            n_events += n_ev
            if progress is not None:
                progress(n)
        writer.close()
    finally:
        gt.close()
        dur.close()
    LOG.info("synth: wrote %d clips, %d events, %d shards", writer.n_clips, n_events, writer.n_shards)
    return SynthResult(
        scores_uri=scores_uri,
        ground_truth_path=f"{out_dir.rstrip('/')}/ground_truth.tsv",
        durations_path=f"{out_dir.rstrip('/')}/durations.tsv",
        n_clips=writer.n_clips,
        n_events=n_events,
        classes=classes,
    )
