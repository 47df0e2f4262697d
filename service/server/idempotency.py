"""Idempotent creation: a request sent again with the same ``Idempotency-Key`` makes nothing new.

A client (``sedtune submit``) sends a fresh key with each submission and, when the connection
is cut before the answer arrives (the service crashed, a proxy timed out), sends the same
request again with the same key. The service stores the key with what it created, in the same
transaction (:meth:`service.store.repo.Store.add_job`), so:

- the same key and the same request (same canonical JSON) answers the job or schedule created
  the first time (HTTP 200 instead of 201), whether the first request got its answer or not;
- the same key with another request is refused (:class:`KeyReusedError`, HTTP 422): a key names
  one request;
- keys are scoped by the client's token (:attr:`IdempotencyKey.principal`, a hash of it) and by
  what they create (``jobs``, ``schedules``). They are kept with the store's records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.server.limits import canonical_json
from service.store.records import IdempotencyRecord

#: What an ``Idempotency-Key`` header may hold: 1 to 200 visible ASCII characters.
KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
HEADER = "Idempotency-Key"


class KeyReusedError(Exception):
    """The key was sent before with another request (one line, naming what it created).

    Args:
        message: The line.
    """


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key for one creating request.

    Attributes:
        principal: Hash of the client's token.
        key: The header's value.
    """

    principal: str
    key: str

    def record(self, scope: str, request_hash: str, resource_id: str, now: datetime) -> IdempotencyRecord:
        """The store record of this key for what the request created."""
        return IdempotencyRecord(self.principal, scope, self.key, request_hash, resource_id, now)

    def check_same(self, found: IdempotencyRecord, request_hash: str, what: str) -> str:
        """The id the key created, if ``request_hash`` is the request it was first sent with.

        Args:
            found: The stored key.
            request_hash: The hash of this request.
            what: ``job`` or ``schedule`` (for the message).

        Raises:
            KeyReusedError: The key came with another request.
        """
        if found.request_hash != request_hash:
            raise KeyReusedError(f"{HEADER} {self.key!r} was sent before with a different request (which "
                                 f"created {what} {found.resource_id}); send a new key for a new request")
        return found.resource_id


def request_hash(doc: Any) -> str:
    """SHA-256 (hex) of a request's canonical JSON: equal for equal requests, whatever their key order."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def principal_of(token: str) -> str:
    """The scope of a token's keys: a hash of it (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:32]
