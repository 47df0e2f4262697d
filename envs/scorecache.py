"""Scores in any supported form where a score set is expected; TSV folders and .npz cached.

:func:`resolve_scores` turns what a user passes as scores into the path or URI of a Parquet
score set (:mod:`envs.scoreformat`). :meth:`envs.scoreset.ScoreSet.open` calls it, so every
command, the job check and the job runner accept the same three forms:

- a Parquet score set: a URI with a scheme other than ``file://`` (``s3://...``), a directory
  holding ``*.parquet`` shards, or a single ``.parquet`` file. Used as it is.
- a sed_scores_eval TSV folder: a local directory with ``*.tsv`` files and no ``*.parquet``.
- a NumPy ``.npz`` file (the arrays ``sedtune import`` reads).

A TSV folder or ``.npz`` is converted once, by ``sedtune import``'s own converter (so with its
one-line errors naming the file, and ``.wav`` appended to TSV clip names), into a score set in
the cache, and that set's path is returned. Later calls return the cached set without
converting.

Cache key: the SHA-256 of the source's *content* — the sorted ``.tsv`` file names and each
file's bytes (or the ``.npz``'s bytes) — plus the converter's settings and version. Content
rather than names, sizes and mtimes because a stale key gives silently wrong figures: a file
rewritten within one mtime tick at the same size, or a copy that restores old mtimes
(``cp -p``, rsync, tar), would keep a metadata key. Hashing reads the source once per process
(measured: about 50 ms for a 14 MB, 1168-clip folder, against 1.8 s for its conversion); within a
process the digest is reused while every file's size, mtime, ctime and inode are unchanged.
Identical copies of a folder share one entry.

Location: ``$SEDTUNE_CACHE_DIR/scores/<key>``; without ``$SEDTUNE_CACHE_DIR``,
``$XDG_CACHE_HOME/sedtune/scores`` or ``~/.cache/sedtune/scores``. An entry may be deleted at
any time (it is rebuilt when needed); nothing is evicted automatically.

Safety: a conversion writes into a temporary folder beside the entry and renames it into
place when complete, after writing a manifest (``sedtune-cache.json``) with every shard's
size and SHA-256. An entry is used only if its manifest names its key and its shards are
exactly the manifest's, byte for byte; any other entry (partial, truncated, edited) is
replaced. Conversions of one key take an exclusive file lock, so concurrent runs convert once
and the others wait and use the result; leftovers of a killed conversion are removed by the
next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlparse

from envs.errors import SedtuneInputError
from envs.importers import import_source, tsv_files
from envs.scoreformat import FORMAT

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the rename alone keeps entries whole
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger(__name__)

CACHE_ENV = "SEDTUNE_CACHE_DIR"
CACHE_FORMAT = "sedtune.scorecache/1"
MANIFEST = "sedtune-cache.json"
AUDIO_EXTENSION = ".wav"
CLIPS_PER_SHARD = 2000
_CHUNK = 1 << 20
_WRITABLE = f"set ${CACHE_ENV} to a writable folder"
_MEMO_MAX = 256

Kind = Literal["parquet", "tsv", "npz"]


@dataclass(frozen=True)
class ScoreSource:
    """What a scores argument is.

    Attributes:
        kind: ``parquet`` (a score set), ``tsv`` (sed_scores_eval folder) or ``npz``.
        path: The argument as given for ``parquet``; the local path for ``tsv`` and ``npz``.
    """

    kind: Kind
    path: str


def score_source(uri: str) -> ScoreSource:
    """Tell the form of a scores argument from its name and directory listing (no scores read).

    Anything that is not recognisably a TSV folder or an ``.npz`` counts as a Parquet set, so
    that :meth:`envs.scoreset.ScoreSet.open` reports what is wrong with it.

    Raises:
        SedtuneInputError: A single ``.tsv`` file (a TSV score set is a folder of them).
    """
    local = uri
    if "://" in uri:
        parsed = urlparse(uri)
        if parsed.scheme.lower() != "file":
            return ScoreSource("parquet", uri)
        local = unquote(parsed.path)
    if os.path.isfile(local):
        if local.endswith(".npz"):
            return ScoreSource("npz", local)
        if local.endswith(".tsv"):
            raise SedtuneInputError(
                f"{uri}: a single TSV file; scores are a score set (Parquet folder), a folder of "
                "per-clip sed_scores_eval TSV files, or an .npz"
            )
        return ScoreSource("parquet", uri)
    if os.path.isdir(local):
        try:
            names = os.listdir(local)
        except OSError:
            return ScoreSource("parquet", uri)
        if not any(n.endswith(".parquet") for n in names) and any(n.endswith(".tsv") for n in names):
            return ScoreSource("tsv", local)
    return ScoreSource("parquet", uri)


def cache_root() -> str:
    """The folder of cached score sets (see the module docstring for the default)."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "sedtune")
    return os.path.join(os.path.abspath(os.path.expanduser(base)), "scores")


_PROGRESS: ContextVar[Callable[[int], None] | None] = ContextVar("sedtune_conversion_progress", default=None)


@contextlib.contextmanager
def conversion_progress(callback: Callable[[int], None]) -> Iterator[None]:
    """Within the block, conversions report to ``callback`` (1 per clip) unless given another.

    Lets a command show progress for the conversions its :meth:`ScoreSet.open` calls make.
    """
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def resolve_scores(uri: str, progress: Callable[[int], None] | None = None) -> str:
    """The Parquet score set to read for a scores argument, converting it once if needed.

    Args:
        uri: A score set (path or URI), a sed_scores_eval TSV folder or an ``.npz``.
        progress: Called with 1 per clip while a TSV folder is being converted (default:
            the callback of the enclosing :func:`conversion_progress`, if any).

    Returns:
        ``uri`` itself for a Parquet set; else the path of its cached score set.

    Raises:
        SedtuneInputError: A malformed source (import's error, naming the file), or a cache
            folder that cannot be written.
    """
    src = score_source(uri)
    if src.kind == "parquet":
        return uri
    key = source_key(src)
    root = cache_root()
    entry = os.path.join(root, key)
    if _problem(entry, key) is None:
        return entry
    return _convert(src, key, root, progress or _PROGRESS.get())


def source_key(src: ScoreSource) -> str:
    """The cache key of a TSV folder or ``.npz``: 32 hex digits of a content SHA-256.

    Raises:
        SedtuneInputError: The source cannot be listed or read.
    """
    files = _source_files(src)
    try:
        stamp = tuple((name, *_stat(path)) for name, path in files)
    except OSError as e:
        raise SedtuneInputError(f"{src.path}: cannot be read ({e.strerror or e})") from None
    memo_key = (src.kind, os.path.realpath(src.path), stamp)
    if memo_key not in _DIGESTS:
        if len(_DIGESTS) >= _MEMO_MAX:
            _DIGESTS.clear()
        _DIGESTS[memo_key] = _content_key(src.kind, files)
    return _DIGESTS[memo_key]


def _content_key(kind: Kind, files: list[tuple[str, str]]) -> str:
    """SHA-256 (32 hex digits) of the converter's settings, the file names and their bytes."""
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{FORMAT}\0{kind}\0{AUDIO_EXTENSION}\0{CLIPS_PER_SHARD}\0".encode())
    for name, path in files:
        h.update(name.encode() + b"\0")
        try:
            h.update(_file_digest(path))
        except OSError as e:
            raise SedtuneInputError(f"{path}: cannot be read ({e.strerror or e})") from None
    return h.hexdigest()[:32]


_DIGESTS: dict[tuple[object, ...], str] = {}
_VALIDATED: dict[str, tuple[tuple[object, ...], ...]] = {}


def _source_files(src: ScoreSource) -> list[tuple[str, str]]:
    """(name, path) of the files a source's conversion reads."""
    if src.kind == "npz":
        return [("", src.path)]  # the clip names are inside: a renamed copy is the same set
    return [(n, os.path.join(src.path, n)) for n in tsv_files(src.path)]


def _stat(path: str) -> tuple[int, int, int, int]:
    """Size, mtime, ctime and inode: any write or ``utime`` changes one (ctime cannot be set)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _file_digest(path: str) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def _entry_stamp(entry: str) -> tuple[tuple[object, ...], ...]:
    """Names and :func:`_stat` of an entry's files (to skip re-hashing it in a process)."""
    return tuple((n, *_stat(os.path.join(entry, n))) for n in sorted(os.listdir(entry)))


def _problem(entry: str, key: str) -> str | None:
    """Why a cache entry cannot be used (None: it is complete and intact)."""
    if not os.path.isdir(entry):
        return "missing"
    try:
        stamp = _entry_stamp(entry)
        if _VALIDATED.get(entry) == stamp:
            return None
        with open(os.path.join(entry, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
            return f"{MANIFEST} is not a {CACHE_FORMAT} manifest"
        if manifest.get("key") != key:
            return f"{MANIFEST} names key {manifest.get('key')!r}"
        shards = manifest.get("shards")
        present = sorted(n for n in os.listdir(entry) if n.endswith(".parquet"))
        if not isinstance(shards, dict) or sorted(shards) != present or not present:
            return f"shards {present} differ from the manifest's"
        for name, want in shards.items():
            path = os.path.join(entry, name)
            if not isinstance(want, dict) or os.path.getsize(path) != want.get("size"):
                return f"{name}: size differs from the manifest's"
            if _file_digest(path).hex() != want.get("sha256"):
                return f"{name}: content differs from the manifest's"
    except (OSError, ValueError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if len(_VALIDATED) >= _MEMO_MAX:
        _VALIDATED.clear()
    _VALIDATED[entry] = stamp
    return None


def _convert(src: ScoreSource, key: str, root: str, progress: Callable[[int], None] | None) -> str:
    """Convert a source into the cache entry ``root/key`` (under the key's lock)."""
    entry = os.path.join(root, key)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise SedtuneInputError(
            f"{root}: cannot create the score cache ({e.strerror or e}); {_WRITABLE}"
        ) from None
    with _locked(os.path.join(root, f".lock-{key}")):
        problem = _problem(entry, key)
        if problem is None:  # another process converted it while we waited
            return entry
        _remove_debris(root, key)
        if problem != "missing":
            LOG.warning("score cache entry %s is unusable (%s); converting again", entry, problem)
            _discard(entry, root, key)
        tmp = os.path.join(root, f".tmp-{key}-{uuid.uuid4().hex}")
        try:
            writer = import_source(src.path, tmp, AUDIO_EXTENSION, CLIPS_PER_SHARD, progress)
            if _content_key(src.kind, _source_files(src)) != key:
                raise SedtuneInputError(f"{src.path}: files changed during the conversion; run again")
            _write_manifest(tmp, key, src)
            _publish(tmp, entry, key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    LOG.info("converted %s (%s, %d clips) into the score cache %s", src.path, src.kind, writer.n_clips, entry)
    return entry


def _write_manifest(folder: str, key: str, src: ScoreSource) -> None:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".parquet"))
    paths = {n: os.path.join(folder, n) for n in names}
    shards = {n: {"size": os.path.getsize(p), "sha256": _file_digest(p).hex()} for n, p in paths.items()}
    source = os.path.abspath(src.path)
    manifest = {"format": CACHE_FORMAT, "key": key, "kind": src.kind, "source": source, "shards": shards}
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _publish(tmp: str, entry: str, key: str) -> None:
    """Rename a complete folder into place; if another process got there first, use its entry."""
    try:
        os.rename(tmp, entry)
    except OSError:
        # Only without a working lock (e.g. a cache shared over a filesystem without flock).
        if _problem(entry, key) is not None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(entry: str, root: str, key: str) -> None:
    """Move an unusable entry out of the way at once (a rename), then delete it."""
    trash = os.path.join(root, f".trash-{key}-{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(entry, trash)
    shutil.rmtree(trash, ignore_errors=True)
    _VALIDATED.pop(entry, None)


def _remove_debris(root: str, key: str) -> None:
    """Temporary and trash folders of this key left by killed runs (we hold the key's lock)."""
    if fcntl is None:
        return
    for name in os.listdir(root):
        if name.startswith((f".tmp-{key}-", f".trash-{key}-")):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on ``path`` (a no-op where ``fcntl`` is missing)."""
    if fcntl is None:
        yield
        return
    try:
        f = open(path, "a+b")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as e:
        reason = e.strerror or e
        raise SedtuneInputError(f"{path}: cannot create the cache lock ({reason}); {_WRITABLE}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
