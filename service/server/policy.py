"""What a spec submitted to the service may touch, and the spec the job really runs.

The service runs jobs for remote callers, so a spec must not make it (or its cluster) read or
write arbitrary files. :func:`check_policy` enforces, with the field path of the first
violation:

- data paths (``data.scores``, ``data.ground_truth``, ``data.durations`` and the same under
  ``heldout.data``) are absolute local paths whose real path (symlinks and ``..`` resolved)
  lies under a configured data root, or URIs whose scheme is allowed (``s3``, ``gs``);
- ``output`` is absolute and under a configured output root;
- a ``warm_start`` given as a path is under a data or output root (a nightly retune reads the
  previous run's result);
- numbers are finite and strings valid UTF-8 without NUL (JSON admits ``1e400`` and lone
  surrogates; paths and the store do not);
- the test-only option ``fault_marker`` is refused;
- ``tracking.uri`` is the service's tracking URI or absent (a job must not write an SQLite
  file anywhere, nor post to an arbitrary server).

:func:`check_options` applies every strategy's budget rule (no data is opened), so a budget the
strategy cannot run is refused at submission, not after Ray started.

:func:`effective_spec` then fixes what the job runs with: its own output directory
``<output or first output root/name>/<job id>`` (so runs of a schedule never overwrite each
other), the service's tracking URI, and no ``resources.address`` (the job connects to the
cluster it runs in).
"""

from __future__ import annotations

import math
import os
import re
from urllib.parse import urlparse

from envs.errors import SedtuneInputError
from service.server.settings import Settings
from service.tuning.spec import DataSpec, JobSpec

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*$")


class FieldError(SedtuneInputError):
    """A spec field breaks a rule.

    Args:
        field: Dotted field path (``data.scores``, ``strategies[1].options.warm_start``).
        rule: The rule and the value, one line.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def split_field(message: str) -> tuple[str | None, str]:
    """``("data.scores", "rule")`` from ``"data.scores: rule"``; ``(None, message)`` if no path leads."""
    head, sep, rest = message.partition(": ")
    if sep and _FIELD.match(head):
        return head, rest
    return None, message


def _under(path: str, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _check_location(value: str, field: str, roots: tuple[str, ...], settings: Settings, what: str) -> None:
    parsed = urlparse(value)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        value, scheme = parsed.path, ""
    if scheme and not (len(scheme) == 1 and os.name == "nt"):
        if scheme not in settings.allowed_schemes:
            allowed = ", ".join(settings.allowed_schemes) or "none"
            raise FieldError(field, f"URI scheme {scheme!r} is not allowed (allowed schemes: {allowed}), "
                                    f"got {value!r}")
        return
    if not os.path.isabs(value):
        raise FieldError(field, f"a local path must be absolute and under a {what} root, got {value!r}")
    if not _under(value, roots):
        raise FieldError(field, f"{value!r} is outside the allowed {what} roots {list(roots)}")


def _check_data(data: DataSpec, where: str, settings: Settings) -> None:
    for name in ("scores", "ground_truth", "durations"):
        value = getattr(data, name)
        if value is not None:
            _check_location(value, f"{where}.{name}", settings.data_roots, settings, "data")


def _check_values(obj: object, path: str) -> None:
    """Every number finite, every string valid UTF-8 without NUL (JSON allows both, files do not)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise FieldError(path or "spec", f"must be a finite number, got {obj}")
    if isinstance(obj, str):
        if "\x00" in obj:
            raise FieldError(path or "spec", "must not contain NUL characters")
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError(path or "spec", "must be valid Unicode (no lone surrogates)") from None
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_values(k, path)
            _check_values(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_values(v, f"{path}[{i}]")


def check_policy(spec: JobSpec, settings: Settings) -> None:
    """Refuse a spec that reaches outside the configured roots (see the module docstring).

    Raises:
        FieldError: The first violation, with its field path.
    """
    _check_values(spec.model_dump(mode="python"), "")
    _check_data(spec.data, "data", settings)
    if spec.heldout.data is not None:
        _check_data(spec.heldout.data, "heldout.data", settings)
    if spec.output is not None:
        if urlparse(spec.output).scheme:
            raise FieldError("output", f"must be a local absolute path under an output root, "
                                      f"got {spec.output!r}")
        _check_location(spec.output, "output", settings.output_roots, settings, "output")
    for i, s in enumerate(spec.strategies):
        where = f"strategies[{i}].options"
        if getattr(s.options, "fault_marker", None) is not None:
            raise FieldError(f"{where}.fault_marker", "is a test-only option; the service does not accept it")
        warm = getattr(s.options, "warm_start", None)
        if isinstance(warm, str):
            _check_location(warm, f"{where}.warm_start", settings.data_roots + settings.output_roots,
                            settings, "data or output")
    uri = spec.tracking.uri
    if uri is not None and uri != settings.tracking_uri:
        raise FieldError("tracking.uri", f"must be omitted or equal the service's tracking URI "
                                         f"{settings.tracking_uri!r}, got {uri!r}")


def check_options(spec: JobSpec) -> None:
    """Apply every strategy's budget rule to its options (cheap: no data is opened).

    The options themselves were validated with the spec (each strategy entry is typed by its
    name); the rule lives with them (:meth:`service.strategies.options.StrategyOptions.budget_error`).

    Raises:
        FieldError: ``strategies[i].budget`` and the rule.
    """
    n_settings = len(spec.space.to_space().settings)
    for i, s in enumerate(spec.strategies):
        error = s.options.budget_error(s.budget, n_settings)
        if error is not None:
            raise FieldError(f"strategies[{i}].budget", error)


def effective_spec(spec: JobSpec, settings: Settings, job_id: str) -> JobSpec:
    """The spec the job runs: its own output directory, the service's tracking, no address.

    Args:
        spec: A spec that passed :func:`check_policy`.
        settings: Service settings.
        job_id: The job's id.
    """
    base = spec.output or os.path.join(settings.output_roots[0], spec.name)
    tracking = spec.tracking.model_copy(update={"uri": spec.tracking.uri or settings.tracking_uri})
    resources = spec.resources.model_copy(update={"address": None})
    return spec.model_copy(update={"output": os.path.join(base, job_id), "tracking": tracking,
                                   "resources": resources})
