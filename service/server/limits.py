"""The size limit of a job spec, stated at validation.

A spec travels to its Ray job in a file (:mod:`service.server.jobfile`), so its size is no
longer bound by the command line; it is bound here, so that a spec the service accepts is one
it can store, hand to Ray and show back. The limit is ``max_spec_bytes`` (``SEDTUNE_MAX_SPEC_BYTES``,
512 KiB by default) over the spec's canonical JSON (defaults filled in, compact separators).
Request bodies are bounded before they are read (:mod:`service.api.limits`).
"""

from __future__ import annotations

import json
from typing import Any

from service.server.policy import FieldError
from service.tuning.spec import JobSpec


def canonical_json(doc: Any) -> bytes:
    """ASCII JSON with sorted keys and compact separators (the form sizes and hashes are taken of;
    non-ASCII characters are escaped, so any string, even a lone surrogate, encodes)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def spec_bytes(spec: JobSpec) -> int:
    """Bytes of the spec's canonical JSON."""
    return len(canonical_json(spec.model_dump(mode="json")))


def check_spec_size(spec: JobSpec, max_bytes: int) -> None:
    """Refuse a spec whose canonical JSON is over ``max_bytes``.

    Raises:
        FieldError: Field ``spec``, with the size and the limit.
    """
    size = spec_bytes(spec)
    if size > max_bytes:
        raise FieldError("spec", f"is {size} bytes of JSON (defaults included); the limit is {max_bytes} "
                                 "bytes (SEDTUNE_MAX_SPEC_BYTES)")
