"""The Ray job entrypoint of a sedtune job, built by sedtune (never taken from a request).

The service submits ``<python> -m service.jobrun --job-id ID --spec-file PATH --spec-sha256 HEX``:
the spec travels in a job file (:mod:`service.server.jobfile`), so the command line stays a
few hundred bytes whatever the spec's size. ``sedtune submit --ray-address`` (no service, so
no folder shared with the cluster) puts the job file in the job's working directory, which Ray
uploads to the cluster, and names it by a relative path. The command holds nothing a caller
can inject into the shell: the job id is checked against :data:`JOB_ID_PATTERN` and every
part is quoted.
"""

from __future__ import annotations

import re
import shlex
import uuid

JOB_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,39}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def new_job_id() -> str:
    """A fresh job id, ``j-`` and 16 hex digits."""
    return f"j-{uuid.uuid4().hex[:16]}"


def _check_id(job_id: str) -> None:
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id must match {JOB_ID_PATTERN.pattern}, but got {job_id!r}")


def build_entrypoint(python: str, job_id: str, spec_file: str, sha256: str) -> str:
    """The shell command Ray runs for a job the service submits.

    Args:
        python: Python executable on the cluster.
        job_id: The job id (must match :data:`JOB_ID_PATTERN`).
        spec_file: The job file (:func:`service.server.jobfile.write_jobfile`): absolute, or
            relative to the job's working directory (one Ray uploads).
        sha256: Its SHA-256 (hex).

    Raises:
        ValueError: A job id that does not match the pattern, or a malformed hash.
    """
    _check_id(job_id)
    if not _SHA256.match(sha256):
        raise ValueError(f"sha256 must be 64 lower-case hex digits, but got {sha256!r}")
    return " ".join(shlex.quote(p) for p in (python, "-m", "service.jobrun", "--job-id", job_id,
                                             "--spec-file", spec_file, "--spec-sha256", sha256))
