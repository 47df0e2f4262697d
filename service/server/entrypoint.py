"""The Ray job entrypoint of a sedtune job, built from a validated spec (never from a request).

``<python> -m service.jobrun --job-id ID --spec-b64 B64`` where B64 is the URL-safe base64 of
the spec's canonical JSON: the command holds nothing a caller can inject into the shell (the
job id is checked against :data:`JOB_ID_PATTERN` and every part is quoted).
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


def build_entrypoint(python: str, job_id: str, spec: JobSpec) -> str:
    """The shell command Ray runs for a job.

    Args:
        python: Python executable on the cluster.
        job_id: The job id (must match :data:`JOB_ID_PATTERN`).
        spec: The effective, validated spec.

    Raises:
        ValueError: A job id that does not match the pattern.
    """
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id must match {JOB_ID_PATTERN.pattern}, but got {job_id!r}")
    return " ".join(shlex.quote(p) for p in
                    (python, "-m", "service.jobrun", "--job-id", job_id, "--spec-b64", encode_spec(spec)))
