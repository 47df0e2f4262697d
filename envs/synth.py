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

Output: a local set is written beside ``out_dir`` and moved in when complete, so a killed or
interrupted run never leaves a partial set at ``out_dir``; sets over :data:`MAX_CELLS` cells
or the free disk space are refused before anything is written (:func:`check_size`).

Determinism: class properties come from ``SeedSequence(seed, spawn_key=(0, class index))``,
the confusion cycle from ``spawn_key=(2,)`` and chunk ``i`` from ``spawn_key=(1, i)``. The
chunk size depends only on the number of classes and frames (:attr:`SynthConfig.chunk_clips`),
so the same config gives identical scores and ground truth (given the same numpy and scipy
versions; numpy's SIMD math may differ in the last bit between CPU families), and
``clips_per_shard`` does not change any value.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import numpy as np
import pyarrow.fs as pafs

from envs.errors import SedtuneInputError
from envs.folders import fresh_dir
from envs.scoreformat import resolve
from envs.scorewriter import ScoreSetWriter
from envs.synth_config import SynthConfig
from envs.synth_scores import ChunkEvents, chunk_scores, class_profiles, sample_events

LOG = logging.getLogger(__name__)

#: Most (clip, frame, class) score cells one set may hold: 10^10, about 40 GB of float32
#: scores on disk (zstd barely shrinks noisy scores: measured 3.7 bytes per cell) and about
#: 1.5 hours of generation at the measured 1.7 million cells per second on one core.
MAX_CELLS = 10**10
#: Disk bytes per score cell assumed by :func:`check_size` (float32).
BYTES_PER_CELL = 4
#: Disk bytes per clip assumed for its ground-truth and durations rows.
BYTES_PER_CLIP = 512


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


def check_size(out_dir: str, config: SynthConfig) -> None:
    """Refuse a set larger than :data:`MAX_CELLS` or than the free space where it would go.

    Args:
        out_dir: The output directory (its free space is checked for local paths only).
        config: What would be generated.

    Raises:
        SedtuneInputError: One line with the size and the limit.
    """
    cells = config.n_clips * config.n_classes * config.n_frames
    shape = f"{config.n_clips} clips x {config.n_classes} classes x {config.n_frames} frames"
    if cells > MAX_CELLS:
        raise SedtuneInputError(
            f"synth: {shape} is {cells:.3g} score cells; the most one set may hold is {MAX_CELLS:.3g} "
            f"(about {MAX_CELLS * BYTES_PER_CELL / 1e9:.0f} GB)"
        )
    if "://" in out_dir:
        return
    need = estimated_bytes(config)
    where = os.path.abspath(out_dir)
    while not os.path.isdir(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if need > free:
        raise SedtuneInputError(
            f"synth: {shape} needs about {need / 1e9:.3g} GB in {out_dir}, but only "
            f"{free / 1e9:.3g} GB are free there"
        )


def estimated_bytes(config: SynthConfig) -> int:
    """About the bytes a set takes on disk: its scores, plus a little per clip for the TSVs."""
    cells = config.n_clips * config.n_classes * config.n_frames
    return cells * BYTES_PER_CELL + config.n_clips * BYTES_PER_CLIP


def _check_out_dir(out_dir: str, overwrite: bool) -> tuple[pafs.FileSystem, str]:
    """Refuse an out_dir that is a file, or holds a set (unless ``overwrite``); nothing is changed."""
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
        scores = f"{root}/scores"
        if fs.get_file_info(scores).type == pafs.FileType.Directory:
            old = [i.path for i in fs.get_file_info(pafs.FileSelector(scores)) if i.path.endswith(".parquet")]
            if old:
                # Stale shards would join the new set and corrupt it.
                raise SedtuneInputError(
                    f"{out_dir}/scores already holds {len(old)} shard(s); choose an empty "
                    "out_dir or pass overwrite=True"
                )
    return fs, root


def _publish(staging: str, root: str) -> None:
    """Move a complete set from ``staging`` to ``root`` (local paths).

    A missing or empty ``root`` is replaced by one rename. Otherwise (other files beside the
    set, or ``overwrite``) the parts move one by one: ``scores`` (an old one set aside first and
    deleted after), ``durations.tsv``, and ``ground_truth.tsv`` last.
    """
    try:
        os.rename(staging, root)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    scores, old = os.path.join(root, "scores"), None
    if os.path.lexists(scores):
        old = tempfile.mkdtemp(prefix=".scores.synth-replaced-", dir=root)
        os.rename(scores, os.path.join(old, "scores"))
    os.rename(os.path.join(staging, "scores"), scores)
    for name in ("durations.tsv", "ground_truth.tsv"):
        os.replace(os.path.join(staging, name), os.path.join(root, name))
    os.rmdir(staging)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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

    A local ``out_dir`` gets the set only when it is complete: it is written into a staging
    folder beside it (``.<name>.synth-staging-XXXXXXXX``) and renamed into place; an
    exception or an interrupt (KeyboardInterrupt) removes the staging folder, a killed process
    leaves it beside ``out_dir``, never a partial set in it. A URI is written in place.

    Args:
        out_dir: Output directory (local path or pyarrow filesystem URI), created if missing.
        config: What to generate (at most :data:`MAX_CELLS` cells, and what fits the free space).
        progress: Called with the number of clips just written, after every chunk.
        overwrite: Replace a set already in ``out_dir`` (its scores, ground truth and
            durations) instead of refusing.

    Returns:
        Where the files are and what they hold.

    Raises:
        SedtuneInputError: ``out_dir`` holds a set (or a ground truth, or durations) and
            ``overwrite`` is False, is a file, or the set is too large (:func:`check_size`).
    """
    check_size(out_dir, config)
    fs, root = _check_out_dir(out_dir, overwrite)
    if "://" in out_dir:
        fs.create_dir(root, recursive=True)
        n_events, n_clips = _write(fs, root, out_dir.rstrip("/"), config, progress, overwrite)
    else:
        parent, name = os.path.split(os.path.realpath(root))
        os.makedirs(parent, exist_ok=True)
        staging = fresh_dir(parent, f".{name}.synth-staging-")
        try:
            n_events, n_clips = _write(fs, staging, staging, config, progress, overwrite=False)
            _publish(staging, os.path.join(parent, name))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return SynthResult(
        scores_uri=f"{out_dir.rstrip('/')}/scores",
        ground_truth_path=f"{out_dir.rstrip('/')}/ground_truth.tsv",
        durations_path=f"{out_dir.rstrip('/')}/durations.tsv",
        n_clips=n_clips,
        n_events=n_events,
        classes=config.classes,
    )


def _write(
    fs: pafs.FileSystem,
    root: str,
    uri: str,
    config: SynthConfig,
    progress: Callable[[int], None] | None,
    overwrite: bool,
) -> tuple[int, int]:
    """Write the set into ``root`` (``uri`` on ``fs``); returns (events, clips) written."""
    classes = config.classes
    prof = class_profiles(config)
    scores_uri = f"{uri}/scores"
    if overwrite:  # in place (a URI): old shards would join the new set
        scores = f"{root}/scores"
        if fs.get_file_info(scores).type == pafs.FileType.Directory:
            for info in fs.get_file_info(pafs.FileSelector(scores)):
                if info.path.endswith(".parquet"):
                    fs.delete_file(info.path)
    LOG.info(
        "synth: %d clips x %d classes x %d frames into %s (seed %d)",
        config.n_clips,
        len(classes),
        config.n_frames,
        uri,
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
    return n_events, writer.n_clips
