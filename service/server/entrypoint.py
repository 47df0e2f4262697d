"""The Ray job entrypoint of a sedtune job, built by sedtune (never taken from a request).

The service submits ``<python> -m service.jobrun --job-id ID --spec-file PATH --spec-sha256 HEX``:
the spec travels in a job file (:mod:`service.server.jobfile`), so the command line stays a
few hundred bytes whatever the spec's size. ``sedtune submit --ray-address`` (no service, so
no folder shared with the cluster) still sends ``--spec-b64 B64``, the URL-safe base64 of the
spec's canonical JSON, and refuses up front a spec too large for a command line
(:data:`MAX_ENTRYPOINT_BYTES`). The command holds nothing a caller can inject into the shell:
the job id is checked against :data:`JOB_ID_PATTERN` and every part is quoted.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import uuid
from typing import Any

from envs.errors import SedtuneInputError
from service.tuning.spec import JobSpec, parse_spec

JOB_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,39}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Longest ``--spec-b64`` entrypoint sent: Ray runs the entrypoint as one shell argument, and
#: Linux refuses an argument over 128 KiB ("Argument list too long").
MAX_ENTRYPOINT_BYTES = 120 * 1024


def new_job_id() -> str:
    """A fresh job id, ``j-`` and 16 hex digits."""
    return f"j-{uuid.uuid4().hex[:16]}"


def encode_spec(spec: JobSpec) -> str:
    """URL-safe base64 of the spec's JSON."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def decode_spec(b64: str) -> JobSpec:
    """The spec of :func:`encode_spec`, validated again.

    Raises:
        SedtuneInputError: Not base64 of a JSON mapping, or the spec is invalid.
    """
    try:
        obj: Any = json.loads(base64.urlsafe_b64decode(b64.encode("ascii")).decode("utf-8"))
    except (ValueError, UnicodeError) as e:
        raise SedtuneInputError(f"--spec-b64: not base64 of a JSON spec ({e})") from None
    return parse_spec(obj, "spec")


def _check_id(job_id: str) -> None:
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id must match {JOB_ID_PATTERN.pattern}, but got {job_id!r}")


def build_entrypoint(python: str, job_id: str, spec_file: str, sha256: str) -> str:
    """The shell command Ray runs for a job the service submits.

    Args:
        python: Python executable on the cluster.
        job_id: The job id (must match :data:`JOB_ID_PATTERN`).
        spec_file: The job file (:func:`service.server.jobfile.write_jobfile`), absolute.
        sha256: Its SHA-256 (hex).

    Raises:
        ValueError: A job id that does not match the pattern, or a malformed hash.
    """
    _check_id(job_id)
    if not _SHA256.match(sha256):
        raise ValueError(f"sha256 must be 64 lower-case hex digits, but got {sha256!r}")
    return " ".join(shlex.quote(p) for p in (python, "-m", "service.jobrun", "--job-id", job_id,
                                             "--spec-file", spec_file, "--spec-sha256", sha256))


def build_b64_entrypoint(python: str, job_id: str, spec: JobSpec) -> str:
    """The shell command of a job submitted straight to Ray, the spec on its command line.

    Raises:
        ValueError: A job id that does not match the pattern.
        SedtuneInputError: The command would exceed :data:`MAX_ENTRYPOINT_BYTES`.
    """
    _check_id(job_id)
    cmd = " ".join(shlex.quote(p) for p in
                   (python, "-m", "service.jobrun", "--job-id", job_id, "--spec-b64", encode_spec(spec)))
    if len(cmd.encode("utf-8")) > MAX_ENTRYPOINT_BYTES:
        raise SedtuneInputError(
            f"spec: {len(cmd)} bytes once encoded on the Ray entrypoint's command line, over the "
            f"{MAX_ENTRYPOINT_BYTES} a command line can carry; submit it through the service "
            "(sedtune submit --server URL), which passes the spec in a file")
    return cmd
