"""Bearer keys to tenants: each well-formed key is its own tenant."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from .errors import Unauthorized

_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{1,256}$")


def tenant_for(header: str | None, allowed: frozenset[str]) -> str:
    """The tenant id of ``Authorization: Bearer <key>``, or a 401.

    The tenant is a digest of the key, so keys never reach the database.
    """
    if not header:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
    return _tenant(header, allowed)


@lru_cache(maxsize=1024)
def _tenant(header: str, allowed: frozenset[str]) -> str:
    """The work of ``tenant_for``, remembered per header: a client sends the same one on
    every request. (A refused header raises, and is not remembered.)"""
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not _KEY.match(key):
        raise Unauthorized("malformed Authorization header; send 'Authorization: Bearer <key>'")
    if allowed and key not in allowed:
        raise Unauthorized("invalid API key")
    return hashlib.sha256(key.encode()).hexdigest()[:32]
