"""Configuration of the sedtune service (``sedtune serve``).

Sources, later ones winning: built-in defaults, a YAML config file (``sedtune serve --config``,
keys as in :class:`Settings`), environment variables (``SEDTUNE_*``, below). Tokens are never
part of ``repr`` or of any log line.

| setting | environment | default |
|---|---|---|
| ``data_dir`` | ``SEDTUNE_DATA_DIR`` | ``./sedtune-service`` |
| ``db_url`` | ``SEDTUNE_DB_URL`` | ``sqlite:///<data_dir>/sedtune.db`` |
| ``tokens`` | ``SEDTUNE_TOKENS`` (comma-separated) | none |
| ``tokens_file`` | ``SEDTUNE_TOKENS_FILE`` (one token a line, ``#`` comments) | none |
| ``data_roots`` | ``SEDTUNE_DATA_ROOTS`` (``path1:path2``) | ``<data_dir>/data`` |
| ``output_roots`` | ``SEDTUNE_OUTPUT_ROOTS`` (``path1:path2``) | ``<data_dir>/outputs`` |
| ``allowed_schemes`` | ``SEDTUNE_ALLOWED_SCHEMES`` (``s3,gs``) | none |
| ``ray_address`` | ``SEDTUNE_RAY_ADDRESS`` (dashboard URL) | ``http://127.0.0.1:8265`` |
| ``tracking_uri`` | ``SEDTUNE_TRACKING_URI`` | ``sqlite:///<first output root>/.sedtune/mlflow.db`` |
| ``job_python`` | ``SEDTUNE_JOB_PYTHON`` (Python on the cluster) | ``python`` |
| ``check_data`` | ``SEDTUNE_CHECK_DATA`` (open the data on submit) | ``true`` |
| ``reconcile_interval_s`` | ``SEDTUNE_RECONCILE_INTERVAL_S`` | ``5`` |
| ``scheduler_tick_s`` | ``SEDTUNE_SCHEDULER_TICK_S`` | ``5`` |
| ``resubmit_after_s`` | ``SEDTUNE_RESUBMIT_AFTER_S`` | ``10`` |
| ``max_body_bytes`` | ``SEDTUNE_MAX_BODY_BYTES`` (request body) | ``1048576`` (1 MiB) |
| ``max_spec_bytes`` | ``SEDTUNE_MAX_SPEC_BYTES`` (a spec's JSON) | ``524288`` (512 KiB) |

The service's own files stay out of the jobs' output tree: the job store in ``data_dir``, and
in every output root the folder :data:`SERVICE_DIRNAME` (``.sedtune``: the embedded MLflow store
when no tracking URI is set, the job spec files Ray jobs read). No job name can be it (names
start with a letter or digit) and no spec may point into it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from envs.errors import SedtuneInputError

_ENV = {
    "data_dir": "SEDTUNE_DATA_DIR",
    "db_url": "SEDTUNE_DB_URL",
    "tokens": "SEDTUNE_TOKENS",
    "tokens_file": "SEDTUNE_TOKENS_FILE",
    "data_roots": "SEDTUNE_DATA_ROOTS",
    "output_roots": "SEDTUNE_OUTPUT_ROOTS",
    "allowed_schemes": "SEDTUNE_ALLOWED_SCHEMES",
    "ray_address": "SEDTUNE_RAY_ADDRESS",
    "tracking_uri": "SEDTUNE_TRACKING_URI",
    "job_python": "SEDTUNE_JOB_PYTHON",
    "check_data": "SEDTUNE_CHECK_DATA",
    "reconcile_interval_s": "SEDTUNE_RECONCILE_INTERVAL_S",
    "scheduler_tick_s": "SEDTUNE_SCHEDULER_TICK_S",
    "resubmit_after_s": "SEDTUNE_RESUBMIT_AFTER_S",
    "max_body_bytes": "SEDTUNE_MAX_BODY_BYTES",
    "max_spec_bytes": "SEDTUNE_MAX_SPEC_BYTES",
}

#: The service's own folder in every output root (shared with the Ray nodes, as the roots are).
SERVICE_DIRNAME = ".sedtune"
#: Default limit of a request body (bytes).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: Default limit of a job spec's canonical JSON (bytes).
DEFAULT_MAX_SPEC_BYTES = 512 * 1024


@dataclass(frozen=True)
class Settings:
    """The service configuration (see the module docstring for sources and defaults).

    Attributes:
        data_dir: The service's own directory (the embedded SQLite database).
        db_url: SQLAlchemy URL of the job store.
        tokens: Accepted bearer tokens (never shown in ``repr``).
        data_roots: Absolute directories a spec may read data from.
        output_roots: Absolute directories job outputs may be written under; the first is the
            default. Both must be shared with the Ray workers (same paths).
        allowed_schemes: URI schemes a spec may read data from (``s3``, ``gs``).
        ray_address: The Ray dashboard / Jobs API URL.
        tracking_uri: MLflow tracking URI given to jobs whose spec names none.
        job_python: Python executable of the job entrypoint on the cluster.
        check_data: Open the data (shard footers, ground truth) when a job is submitted, so a
            missing file is a 422 rather than a failed job.
        reconcile_interval_s: Seconds between polls of Ray job statuses.
        scheduler_tick_s: Seconds between scheduler checks of due schedules.
        resubmit_after_s: Seconds after which a job still QUEUED (Ray was unreachable) is
            submitted again by the reconciler.
        max_body_bytes: Largest request body accepted (bytes); larger ones get 413.
        max_spec_bytes: Largest job spec accepted (bytes of its canonical JSON); larger ones get
            422 at validation.
    """

    data_dir: str = "sedtune-service"
    db_url: str = ""
    tokens: frozenset[str] = field(default=frozenset(), repr=False)
    data_roots: tuple[str, ...] = ()
    output_roots: tuple[str, ...] = ()
    allowed_schemes: tuple[str, ...] = ()
    ray_address: str = "http://127.0.0.1:8265"
    tracking_uri: str = ""
    job_python: str = "python"
    check_data: bool = True
    reconcile_interval_s: float = 5.0
    scheduler_tick_s: float = 5.0
    resubmit_after_s: float = 10.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_spec_bytes: int = DEFAULT_MAX_SPEC_BYTES

    @property
    def service_dir(self) -> str:
        """The service's own shared folder, ``<first output root>/.sedtune`` (after :meth:`resolved`)."""
        return os.path.join(self.output_roots[0], SERVICE_DIRNAME)

    def resolved(self) -> Settings:
        """Absolute paths and the defaults that depend on other settings filled in."""
        data_dir = os.path.abspath(self.data_dir)
        data_roots = tuple(_abs(p) for p in self.data_roots) or (os.path.join(data_dir, "data"),)
        output_roots = tuple(_abs(p) for p in self.output_roots) or (os.path.join(data_dir, "outputs"),)
        db_url = self.db_url or f"sqlite:///{os.path.join(data_dir, 'sedtune.db')}"
        tracking = self.tracking_uri or \
            f"sqlite:///{os.path.join(output_roots[0], SERVICE_DIRNAME, 'mlflow.db')}"
        for name, value in (("reconcile_interval_s", self.reconcile_interval_s),
                            ("scheduler_tick_s", self.scheduler_tick_s),
                            ("resubmit_after_s", self.resubmit_after_s)):
            if not value > 0:
                raise SedtuneInputError(f"settings: {name} must be > 0 seconds, but got {value}")
        for name, size in (("max_body_bytes", self.max_body_bytes), ("max_spec_bytes", self.max_spec_bytes)):
            if not size > 0:
                raise SedtuneInputError(f"settings: {name} must be > 0 bytes, but got {size}")
        return replace(self, data_dir=data_dir, data_roots=data_roots, output_roots=output_roots,
                       db_url=db_url, tracking_uri=tracking,
                       allowed_schemes=tuple(s.lower() for s in self.allowed_schemes))


def _abs(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _split(text: str, sep: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(sep) if p.strip())


def read_tokens_file(path: str) -> frozenset[str]:
    """Tokens of a tokens file: one a line; blank lines and ``#`` comments ignored.

    Raises:
        SedtuneInputError: The file cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SedtuneInputError(f"tokens file {path}: cannot read it ({e.strerror})") from None
    return frozenset(t for t in (ln.split("#", 1)[0].strip() for ln in lines) if t)


def _coerce(name: str, value: Any) -> Any:
    """A raw (string or YAML) value as the type of the setting ``name``."""
    if name in ("data_roots", "output_roots"):
        return _split(value, ":") if isinstance(value, str) else tuple(str(v) for v in value)
    if name == "allowed_schemes":
        return _split(value, ",") if isinstance(value, str) else tuple(str(v) for v in value)
    if name == "check_data":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("1", "0", "true", "false", "yes", "no"):
            raise SedtuneInputError(f"settings: check_data must be true or false, but got {value!r}")
        return text in ("1", "true", "yes")
    if name.endswith("_bytes"):
        try:
            return int(str(value).strip())
        except (TypeError, ValueError):
            raise SedtuneInputError(f"settings: {name} must be a whole number of bytes, but got {value!r}") \
                from None
    if name.endswith("_s"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SedtuneInputError(f"settings: {name} must be a number of seconds, but got {value!r}") \
                from None
    return str(value)


def load_settings(config_path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from defaults, an optional YAML file and the environment.

    Args:
        config_path: YAML file with keys of :class:`Settings` (plus ``tokens_file``).
        environ: Environment (default: ``os.environ``).

    Raises:
        SedtuneInputError: Unreadable config or tokens file, unknown keys, bad values.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if config_path:
        try:
            with open(config_path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            reason = " ".join(str(e).split())
            raise SedtuneInputError(f"config {config_path}: cannot read it ({reason})") from None
        if not isinstance(loaded, dict):
            raise SedtuneInputError(f"config {config_path}: must be a mapping, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - set(_ENV))
        if unknown:
            raise SedtuneInputError(f"config {config_path}: unknown keys {unknown}; known: {sorted(_ENV)}")
        raw.update(loaded)
    for name, var in _ENV.items():
        if env.get(var):
            raw[name] = env[var]
    tokens: set[str] = set()
    if raw.get("tokens"):
        t = raw.pop("tokens")
        tokens |= set(_split(t, ",")) if isinstance(t, str) else {str(x) for x in t}
    else:
        raw.pop("tokens", None)
    if raw.get("tokens_file"):
        tokens |= read_tokens_file(str(raw.pop("tokens_file")))
    else:
        raw.pop("tokens_file", None)
    known = {f.name for f in fields(Settings)}
    values = {k: _coerce(k, v) for k, v in raw.items() if k in known}
    return Settings(tokens=frozenset(tokens), **values).resolved()
