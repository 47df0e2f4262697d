"""Importers into score sets: sed_scores_eval TSV folders and NumPy arrays.

TSV folder (sed_scores_eval convention): one file per clip, named after the clip without its
audio extension, columns ``onset offset <class...>``, one row per frame, frames gapless. The
frame hop is read from the first row (``offset - onset``) and every row's onset must lie at
``i * hop`` (within 1 µs). The clip name in the score set gets ``audio_extension`` appended
so that it matches the ground truth.

NumPy: an ``.npz`` with ``scores`` (clips, frames, classes), ``filenames`` (clips,) and
``classes`` (classes,), plus ``frame_hop_s``; or the same arrays passed directly.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow.fs as pafs

from envs.errors import SedtuneInputError
from envs.scoreformat import check_classes, check_scores, resolve
from envs.scorewriter import ScoreSetWriter

LOG = logging.getLogger(__name__)


def _read_tsv(path: str) -> tuple[list[str], npt.NDArray[np.float64]]:
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            if header[:2] != ["onset", "offset"] or len(header) < 3:
                raise SedtuneInputError(
                    f"{path}, line 1: header must be 'onset offset <class...>', got {header[:4]}"
                )
            rows = []
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != len(header):
                    raise SedtuneInputError(
                        f"{path}, line {lineno}: {len(parts)} fields, header has {len(header)}"
                    )
                try:
                    rows.append([float(x) for x in parts])
                except ValueError:
                    bad = next(x for x in parts if not _is_float(x))
                    raise SedtuneInputError(f"{path}, line {lineno}: {bad!r} is not a number") from None
    except UnicodeDecodeError as e:
        raise SedtuneInputError(f"{path}: not a UTF-8 text file ({e})") from None
    except OSError as e:
        raise SedtuneInputError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not rows:
        raise SedtuneInputError(f"{path}: no frames")
    return header[2:], np.asarray(rows, dtype=np.float64)


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def _check_frames(path: str, times: npt.NDArray[np.float64]) -> float:
    onset, offset = times[:, 0], times[:, 1]
    hop = float(offset[0] - onset[0])
    if not (hop > 0 and np.isfinite(hop)):
        raise SedtuneInputError(f"{path}, line 2: offset {offset[0]} must exceed onset {onset[0]}")
    not_finite = np.flatnonzero(~np.isfinite(offset))
    if len(not_finite):
        i = int(not_finite[0])
        raise SedtuneInputError(f"{path}, line {i + 2}: offset {offset[i]} is not finite")
    expected = np.arange(len(onset)) * hop
    # written so that a NaN onset counts as off the grid
    bad = np.flatnonzero(~(np.abs(onset - expected) <= 1e-6))
    if len(bad):
        i = int(bad[0])
        raise SedtuneInputError(
            f"{path}, line {i + 2}: onset {onset[i]} is not frame {i} x hop {hop} (frames must be gapless)"
        )
    return hop


def _first_bad_score(values: npt.NDArray[np.floating]) -> tuple[int, int] | None:
    """(row, column) of the first NaN, infinite or out-of-[0, 1] value of a 2-D array."""
    with np.errstate(invalid="ignore"):
        bad = ~((values >= 0.0) & (values <= 1.0))
    if not bad.any():
        return None
    row, col = np.argwhere(bad)[0]
    return int(row), int(col)


def _check_output(out_uri: str) -> bool:
    """Refuse an output that exists and is not an empty directory.

    The writer names its shards ``part-00000.parquet``, ...: in a directory holding another
    set it would overwrite some of that set's shards and leave the rest mixed into the new one.

    Returns:
        Whether the (empty) directory already existed.
    """
    fs, root = resolve(out_uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return False
    if info.type != pafs.FileType.Directory:
        raise SedtuneInputError(f"{out_uri}: the output exists and is not a directory")
    if fs.get_file_info(pafs.FileSelector(root)):
        raise SedtuneInputError(
            f"{out_uri}: the output directory is not empty; choose a new or empty directory"
        )
    return True


def _discard(writer: ScoreSetWriter | None, out_uri: str, existed: bool) -> None:
    """After a failed import: delete the shards written and the directory if we created it."""
    if writer is not None:
        writer.abort()
    if existed:
        return
    fs, root = resolve(out_uri)
    try:
        if fs.get_file_info(root).type == pafs.FileType.Directory and not fs.get_file_info(
            pafs.FileSelector(root)
        ):
            fs.delete_dir(root)
    except OSError:
        LOG.warning("could not remove the empty output directory %s", out_uri)


def tsv_files(folder: str) -> list[str]:
    """The score files of a TSV folder: the names ending in ``.tsv``, sorted.

    Exactly the files :func:`import_tsv_folder` reads (the score cache keys on them too).

    Raises:
        SedtuneInputError: Not a readable directory, or no ``.tsv`` file in it.
    """
    if not os.path.isdir(folder):
        raise SedtuneInputError(f"{folder}: not a directory")
    try:
        files = sorted(f for f in os.listdir(folder) if f.endswith(".tsv"))
    except OSError as e:
        raise SedtuneInputError(f"{folder}: cannot be listed ({e.strerror or e})") from None
    if not files:
        raise SedtuneInputError(f"{folder}: no .tsv files")
    return files


def import_tsv_folder(
    folder: str,
    out_uri: str,
    audio_extension: str = ".wav",
    clips_per_shard: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> ScoreSetWriter:
    """Convert a sed_scores_eval TSV folder into a score set.

    Args:
        folder: Directory of ``<clip>.tsv`` files.
        out_uri: Output score-set directory.
        audio_extension: Appended to each clip name (ground truth names clips with it).
        clips_per_shard: Rows per shard.
        progress: Called with 1 after each clip.

    Returns:
        The closed writer (``n_clips``, ``n_shards``).

    Raises:
        SedtuneInputError: Malformed TSV, differing classes or hops, bad values, an output
            that is not a new or empty directory. A failed import leaves no shards behind.
    """
    files = tsv_files(folder)
    existed = _check_output(out_uri)
    writer: ScoreSetWriter | None = None
    first = ""
    hop0 = 0.0
    try:
        for name in files:
            path = os.path.join(folder, name)
            classes, table = _read_tsv(path)
            check_classes(classes, path)
            hop = _check_frames(path, table[:, :2])
            bad = _first_bad_score(table[:, 2:])
            if bad is not None:
                row, col = bad
                check_scores(table[row, 2 + col : 3 + col], f"{path}, line {row + 2}, class {classes[col]!r}")
            if writer is None:
                writer = ScoreSetWriter(out_uri, classes, hop, clips_per_shard)
                first, hop0 = path, hop
            elif classes != writer.classes:
                raise SedtuneInputError(f"{path}: classes {classes} differ from {writer.classes} in {first}")
            elif abs(hop - hop0) > 1e-9:
                raise SedtuneInputError(f"{path}: frame hop {hop} differs from {hop0} in {first}")
            writer.add(name[: -len(".tsv")] + audio_extension, table[:, 2:])
            if progress:
                progress(1)
        assert writer is not None  # files is non-empty
        return writer.close()
    except BaseException:
        _discard(writer, out_uri, existed)
        raise


def _npz_arrays(path: str) -> tuple[npt.NDArray[np.floating], list[str], list[str], float]:
    if not os.path.isfile(path):
        raise SedtuneInputError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise SedtuneInputError(f"{path}: not a .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("scores", "filenames", "classes", "frame_hop_s") if k not in z]
            if missing:
                raise SedtuneInputError(f"{path}: array {missing[0]!r} is missing")
            hop = np.asarray(z["frame_hop_s"])
            try:
                hop_s = float(hop.item())
            except (TypeError, ValueError):
                raise SedtuneInputError(
                    f"{path}: 'frame_hop_s' must be one number, but got {hop.shape} {hop.dtype}"
                ) from None
            return (
                np.asarray(z["scores"]),
                [str(x) for x in z["filenames"]],
                [str(x) for x in z["classes"]],
                hop_s,
            )
    except SedtuneInputError:
        raise
    except (OSError, ValueError) as e:
        raise SedtuneInputError(f"{path}: not a readable .npz file ({e})") from None


def import_numpy(
    out_uri: str,
    scores: npt.NDArray[np.floating] | Sequence[npt.NDArray[np.floating]],
    filenames: Sequence[str],
    classes: Sequence[str],
    frame_hop_s: float,
    clips_per_shard: int = 2000,
) -> ScoreSetWriter:
    """Write arrays as a score set.

    Args:
        out_uri: Output directory.
        scores: (clips, frames, classes) array, or one (frames, classes) array per clip.
        filenames: Clip names, one per clip.
        classes: Class labels.
        frame_hop_s: Seconds per frame.
        clips_per_shard: Rows per shard.

    Raises:
        SedtuneInputError: Count or shape mismatches, bad values.
    """
    if len(scores) != len(filenames):
        raise SedtuneInputError(f"{out_uri}: {len(scores)} score matrices but {len(filenames)} filenames")
    existed = _check_output(out_uri)
    writer = None
    try:
        writer = ScoreSetWriter(out_uri, classes, frame_hop_s, clips_per_shard)
        writer.add_many(zip(filenames, _iter(scores), strict=True))
        return writer.close()
    except BaseException:
        _discard(writer, out_uri, existed)
        raise


def _iter(
    scores: npt.NDArray[np.floating] | Sequence[npt.NDArray[np.floating]],
) -> Iterator[npt.NDArray[np.floating]]:
    yield from scores


def import_npz(path: str, out_uri: str, clips_per_shard: int = 2000) -> ScoreSetWriter:
    """Write an ``.npz`` (see module docstring) as a score set.

    Every array is checked first, so errors name the ``.npz`` (and clip and class).
    """
    scores, filenames, classes, hop = _npz_arrays(path)
    if scores.ndim != 3 or not np.issubdtype(scores.dtype, np.number):
        raise SedtuneInputError(
            f"{path}: 'scores' must be a numeric (clips, frames, classes) array, "
            f"got {scores.dtype} {scores.shape}"
        )
    check_classes(classes, f"{path}, 'classes'")
    if scores.shape[2] != len(classes):
        raise SedtuneInputError(
            f"{path}: 'scores' has {scores.shape[2]} classes but 'classes' lists {len(classes)}"
        )
    if scores.shape[0] != len(filenames):
        raise SedtuneInputError(
            f"{path}: 'scores' holds {scores.shape[0]} clips but 'filenames' lists {len(filenames)}"
        )
    seen: set[str] = set()
    for name in filenames:
        if name in seen:
            raise SedtuneInputError(f"{path}: clip {name!r} appears twice in 'filenames' (duplicate)")
        seen.add(name)
    if not (hop > 0 and np.isfinite(hop)):
        raise SedtuneInputError(f"{path}: 'frame_hop_s' must be > 0, but got {hop}")
    for i, name in enumerate(filenames):
        bad = _first_bad_score(scores[i])
        if bad is not None:
            frame, k = bad
            check_scores(
                scores[i, frame, k : k + 1], f"{path}, clip {name!r}, class {classes[k]!r}, frame {frame}"
            )
    return import_numpy(out_uri, scores, filenames, classes, hop, clips_per_shard)


def import_source(
    source: str,
    out_uri: str,
    audio_extension: str = ".wav",
    clips_per_shard: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> ScoreSetWriter:
    """Import whatever ``source`` is: an ``.npz`` file or a sed_scores_eval TSV folder.

    Args:
        source: ``.npz`` path or TSV folder.
        out_uri: Output score-set directory (new or empty).
        audio_extension: Appended to TSV clip names.
        clips_per_shard: Rows per shard.
        progress: Called with 1 after each TSV clip (not for ``.npz``).

    Raises:
        SedtuneInputError: Neither form, or what the importer of that form raises.
    """
    if source.endswith(".npz"):
        return import_npz(source, out_uri, clips_per_shard)
    if os.path.isdir(source):
        return import_tsv_folder(source, out_uri, audio_extension, clips_per_shard, progress)
    raise SedtuneInputError(f"{source}: neither a directory of TSV files nor an .npz file")
