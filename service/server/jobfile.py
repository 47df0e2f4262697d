"""The job file: how a job's spec reaches its Ray job (in a file, not on the command line).

The service writes ``<first output root>/.sedtune/jobs/<job id>.json`` (the output roots are
shared with the Ray nodes; ``.sedtune`` is the service's own folder, which no job may point
into) and submits ``python -m service.jobrun --job-id ID --spec-file PATH --spec-sha256 HEX``:
the command line stays short whatever the spec's size (Linux refuses a single argument over
128 KiB), and the job refuses a file that changed after the service wrote it. Format::

    {"format": "sedtune.jobfile/1", "job_id": "j-…",
     "spec": {...},                      # the effective spec, local paths resolved
     "confinement": {"data_roots": [...], "output_roots": [...], "allowed_schemes": [...],
                     "reserved": [...]}}  # what the job re-checks before it reads anything

The file is written atomically (temporary file, fsync, rename) and deleted when the job ends.
``--spec-file`` also takes a plain JSON spec (no confinement), for running a job by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any

from envs.errors import SedtuneInputError
from service.server.limits import canonical_json
from service.tuning.spec import JobSpec, parse_spec

FORMAT = "sedtune.jobfile/1"
#: A job file larger than this is refused unread (a spec is at most ``max_spec_bytes``).
MAX_JOBFILE_BYTES = 16 * 1024 * 1024


def jobfile_path(service_dir: str, job_id: str) -> str:
    """Where the job file of ``job_id`` goes: ``<service_dir>/jobs/<job id>.json``."""
    return os.path.join(service_dir, "jobs", f"{job_id}.json")


def write_jobfile(path: str, job_id: str, spec: JobSpec, confinement: dict[str, Any] | None) -> str:
    """Write a job file atomically.

    Args:
        path: Target (its folder is created).
        job_id: The job's id.
        spec: The spec the job runs.
        confinement: The roots the job re-checks (:meth:`service.server.confine.Confinement.to_json`).

    Returns:
        The SHA-256 (hex) of the bytes written.

    Raises:
        OSError: The file cannot be written.
    """
    doc: dict[str, Any] = {"format": FORMAT, "job_id": job_id, "spec": spec.model_dump(mode="json")}
    if confinement is not None:
        doc["confinement"] = confinement
    data = canonical_json(doc)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{job_id}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return hashlib.sha256(data).hexdigest()


def read_jobfile(path: str, job_id: str, sha256: str | None = None) -> tuple[JobSpec, dict[str, Any] | None]:
    """Read a job file (or a plain JSON spec) and validate the spec again.

    Args:
        path: The file.
        job_id: The job's id (a job file must name the same).
        sha256: Expected SHA-256 of the file (hex), or None.

    Returns:
        The spec and the confinement mapping (None for a plain spec).

    Raises:
        SedtuneInputError: Unreadable, too large, changed (hash), another job's, or invalid.
    """
    where = f"--spec-file {path}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JOBFILE_BYTES + 1)
    except OSError as e:
        raise SedtuneInputError(f"{where}: cannot read it ({e.strerror or e})") from None
    if len(data) > MAX_JOBFILE_BYTES:
        raise SedtuneInputError(f"{where}: larger than {MAX_JOBFILE_BYTES} bytes")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise SedtuneInputError(f"{where}: its SHA-256 differs from the one the service submitted; "
                                "the file changed after it was written")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeError) as e:
        raise SedtuneInputError(f"{where}: not UTF-8 JSON ({e})") from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        if doc.get("job_id") != job_id:
            raise SedtuneInputError(f"{where}: the file is job {doc.get('job_id')!r}'s, not {job_id!r}'s")
        conf = doc.get("confinement")
        if conf is not None and not isinstance(conf, dict):
            raise SedtuneInputError(f"{where}: confinement must be a mapping")
        return parse_spec(doc.get("spec"), f"{where}: spec"), conf
    return parse_spec(doc, where), None
