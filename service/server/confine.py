"""Where a job's paths may lead, checked where the data is opened, not only at submission.

The same check runs three times: when a spec is submitted (or a schedule fires), when the
service hands a stored job to Ray (first submission, retry, after a restart), and in the Ray job
process itself (:mod:`service.jobrun`) just before it reads anything, with the roots the service
wrote into the job file. Each time, every local path is resolved once and the *resolved* path is
what the caller goes on with, so a folder swapped for a symlink after an earlier check is caught
by the next one.

A local path (``data.*``, ``heldout.data.*``, ``output``, a ``warm_start`` file) is accepted when

- it is absolute;
- walked one component at a time, with symlinks and ``..`` resolved at each step, it never
  leaves the roots once it has entered one (a symlink at any level that points outside is
  refused, even when a later one points back in);
- its real path lies under a root;
- it is none of the service's own files (:attr:`Confinement.reserved`: the ``.sedtune`` folder
  of every output root, the SQLite job store, an SQLite tracking store and its artifacts);
- if it is a folder (a score set is a folder of shards), none of its entries is a symlink that
  resolves outside the roots.

URIs pass when their scheme is allowed (``s3``, ``gs``); ``file://`` URIs are local paths. What
this cannot see: a folder swapped *while* the job runs, after the job's own check (its workers
open files by path); the data roots should be writable only by those trusted with the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from envs.errors import SedtuneInputError
from service.server.policy import FieldError
from service.server.settings import SERVICE_DIRNAME, Settings
from service.tuning.spec import DataSpec, JobSpec

_SQLITE = "sqlite:///"
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Confinement:
    """The roots a job's paths must stay under, and the service's files it must not touch.

    Attributes:
        data_roots: Real paths of the folders data may be read from.
        output_roots: Real paths of the folders outputs may be written under.
        allowed_schemes: URI schemes data may be read from (lower case).
        reserved: Real paths of the service's own files and folders (never read or written by a job).
    """

    data_roots: tuple[str, ...]
    output_roots: tuple[str, ...]
    allowed_schemes: tuple[str, ...] = ()
    reserved: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Confinement:
        """The confinement of resolved settings (roots, schemes, the service's files)."""
        reserved = [os.path.join(r, SERVICE_DIRNAME) for r in settings.output_roots]
        for url in (settings.db_url, settings.tracking_uri):
            if url.startswith(_SQLITE) and url != f"{_SQLITE}:memory:":
                path = os.path.abspath(url[len(_SQLITE):].split("?", 1)[0])
                reserved += [path + suffix for suffix in _SQLITE_SIDE_FILES]
                if url == settings.tracking_uri:
                    reserved.append(os.path.join(os.path.dirname(path), "mlartifacts"))
        return cls(tuple(settings.data_roots), tuple(settings.output_roots), tuple(settings.allowed_schemes),
                   tuple(dict.fromkeys(os.path.realpath(p) for p in reserved)))

    def to_json(self) -> dict[str, list[str]]:
        """As written into a job file."""
        return {"data_roots": list(self.data_roots), "output_roots": list(self.output_roots),
                "allowed_schemes": list(self.allowed_schemes), "reserved": list(self.reserved)}

    @classmethod
    def from_json(cls, doc: object, source: str) -> Confinement:
        """The confinement of a job file.

        Raises:
            SedtuneInputError: Not a mapping of string lists, or no data/output root.
        """
        if not isinstance(doc, dict):
            raise SedtuneInputError(f"{source}: confinement must be a mapping, got {type(doc).__name__}")
        values: dict[str, tuple[str, ...]] = {}
        for name in ("data_roots", "output_roots", "allowed_schemes", "reserved"):
            items = doc.get(name, [])
            if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
                raise SedtuneInputError(f"{source}: confinement.{name} must be a list of strings")
            values[name] = tuple(items)
        for name in ("data_roots", "output_roots"):
            if not values[name] or not all(os.path.isabs(x) for x in values[name]):
                raise SedtuneInputError(f"{source}: confinement.{name} must list absolute paths")
        return cls(**values)


def _inside(real: str, roots: tuple[str, ...]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def resolve_under(value: str, field: str, roots: tuple[str, ...], what: str,
                  reserved: tuple[str, ...] = ()) -> str:
    """The real path of a local path that stays under ``roots`` at every level.

    Args:
        value: Absolute local path.
        field: Field path for the error.
        roots: Real paths of the allowed roots.
        what: ``data``, ``output`` or ``data or output`` (for the message).
        reserved: Real paths no job may touch.

    Returns:
        ``os.path.realpath(value)``: the path the caller must use from now on.

    Raises:
        FieldError: Not absolute, outside the roots at some level, reserved, or a folder with an
            entry linked outside.
    """
    if not os.path.isabs(value):
        raise FieldError(field, f"a local path must be absolute and under a {what} root, got {value!r}")
    parts = value.split(os.sep)
    entered = False
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i])
        real = os.path.realpath(prefix)
        if _inside(real, roots):
            entered = True
        elif entered:
            raise FieldError(field, f"{value!r} passes outside the allowed {what} roots {list(roots)}: "
                                    f"{prefix!r} resolves to {real!r} (symlinks and '..' must stay under a "
                                    "root at every level)")
    real = os.path.realpath(value)
    if not _inside(real, roots):
        raise FieldError(field, f"{value!r} is outside the allowed {what} roots {list(roots)}")
    for r in reserved:
        if _inside(real, (r,)):
            raise FieldError(field, f"{value!r} is the service's own {r!r}; a job may not read or write it")
    _check_entries(value, real, field, roots, what, reserved)
    return real


def _check_entries(value: str, real: str, field: str, roots: tuple[str, ...], what: str,
                   reserved: tuple[str, ...]) -> None:
    """A folder's entries that are symlinks must resolve under the roots (and not to reserved files)."""
    try:
        if not os.path.isdir(real):
            return
        with os.scandir(real) as entries:
            links = [e for e in entries if e.is_symlink()]
    except OSError:
        return  # unreadable: opening it fails later with its own message
    for e in links:
        target = os.path.realpath(e.path)
        if not _inside(target, roots) or _inside(target, reserved):
            raise FieldError(field, f"{value!r} holds {e.name!r}, a symlink to {target!r} outside the "
                                    f"allowed {what} roots {list(roots)}")


def confine_location(value: str, field: str, roots: tuple[str, ...], conf: Confinement, what: str) -> str:
    """A data location checked: an allowed URI unchanged, a local path (or ``file://``) resolved.

    Raises:
        FieldError: A scheme not allowed, or a local path refused by :func:`resolve_under`.
    """
    parsed = urlparse(value)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return resolve_under(parsed.path, field, roots, what, conf.reserved)
    if scheme:
        if scheme not in conf.allowed_schemes:
            allowed = ", ".join(conf.allowed_schemes) or "none"
            raise FieldError(field, f"URI scheme {scheme!r} is not allowed (allowed schemes: {allowed}), "
                                    f"got {value!r}")
        return value
    return resolve_under(value, field, roots, what, conf.reserved)


def _data(data: DataSpec, where: str, conf: Confinement) -> DataSpec:
    update: dict[str, Any] = {}
    for name in ("scores", "ground_truth", "durations"):
        value = getattr(data, name)
        if value is not None:
            update[name] = confine_location(value, f"{where}.{name}", conf.data_roots, conf, "data")
    return data.model_copy(update=update)


def confine_spec(spec: JobSpec, conf: Confinement) -> JobSpec:
    """The spec with every local path checked and replaced by its resolved real path.

    Args:
        spec: A structurally valid spec.
        conf: Roots, schemes and reserved paths.

    Returns:
        The spec the caller must go on with (its paths are the ones that were checked).

    Raises:
        FieldError: The first path refused, with its field path (``data.scores``,
            ``heldout.data.ground_truth``, ``output``, ``strategies[i].options.warm_start``).
    """
    data = _data(spec.data, "data", conf)
    heldout = spec.heldout
    if heldout.data is not None:
        heldout = heldout.model_copy(update={"data": _data(heldout.data, "heldout.data", conf)})
    output = spec.output
    if output is not None:
        if urlparse(output).scheme:
            raise FieldError("output", f"must be a local absolute path under an output root, got {output!r}")
        output = resolve_under(output, "output", conf.output_roots, "output", conf.reserved)
    strategies = []
    for i, s in enumerate(spec.strategies):
        warm = getattr(s.options, "warm_start", None)
        if isinstance(warm, str):
            real = confine_location(warm, f"strategies[{i}].options.warm_start",
                                    conf.data_roots + conf.output_roots, conf, "data or output")
            s = s.model_copy(update={"options": s.options.model_copy(update={"warm_start": real})})
        strategies.append(s)
    return spec.model_copy(update={"data": data, "heldout": heldout, "output": output,
                                   "strategies": strategies})
