"""API keys: their format, how they are stored (a hash, never the secret) and checked.

A key reads ``fq_<id>_<secret>``: ``id`` (16 hex digits) names the key's record in the key
store, ``secret`` is 32 random bytes (256 bits, URL-safe base64). The ``fq_`` prefix lets
secret scanners recognise a leaked key, and the id lets the gateway find the one record to
check without comparing against every stored hash.

Stored is SHA-256 of the whole key, never the key. A password KDF (argon2, bcrypt, scrypt)
exists to slow down guessing of *low-entropy* secrets; a 256-bit random secret cannot be
guessed however fast the hash is, so a slow hash would only add tens of milliseconds to every
request (GitHub and Stripe store tokens the same way). A keyed hash (HMAC with a server-side
pepper) would add a second secret to distribute to every gateway replica and protect nothing
more for keys of this entropy. The comparison is constant-time (:func:`hmac.compare_digest`)
so that timing tells an attacker nothing about a stored hash.

A deployment imports keys its operator made (``fq keys generate``; ``fq init`` reads them from
``FQ_BOOTSTRAP_*_KEY``): :func:`checked_key` refuses one that is malformed, a placeholder, or
whose secret is not 32 random-looking bytes, since nothing else stands between a hand-made
weak key and the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field

from ferrisqueue.domain.principal import Principal, Scope
from ferrisqueue.errors import ConfigurationError

KEY_PREFIX = "fq_"
_KEY = re.compile(r"fq_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"


def new_key(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> tuple[str, str]:
    """A fresh key and its id: ``(key_id, key)``. ``token_bytes`` is the random source."""
    key_id = token_bytes(8).hex()
    secret = _b64(token_bytes(32))
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def key_id_of(key: str) -> str | None:
    """The id a well-formed key names, else None (nothing to look up)."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


MIN_DISTINCT_SECRET_CHARS = 16
"""Fewest different characters the 43 of a secret may hold. 32 random bytes show about 30
(fewer than 16 has a chance below 1e-9); ``AAAA...`` or a word repeated shows a handful."""


class WeakKey(ConfigurationError):
    """A key offered for import that is malformed, a placeholder, or has a weak secret."""


def checked_key(key: str, *, what: str = "the key") -> str:
    """``key`` (surrounding white space removed) when it is a well-formed key whose secret
    decodes to 32 bytes and looks random; else :class:`WeakKey` saying why and how to make
    one. Returns the key."""
    key = key.strip()
    hint = "make one with `fq keys generate`"
    match = _KEY.fullmatch(key)
    if match is None:
        shown = key if len(key) <= 24 and not key.startswith(KEY_PREFIX) else f"{key[:7]}..."
        raise WeakKey(
            f"{what} is not a FerrisQueue API key (fq_<16 hex>_<43 base64url>): got "
            f"{shown!r} ({len(key)} characters); {hint}"
        )
    key_id, secret = match.groups()
    try:
        raw = base64.urlsafe_b64decode(secret + "=")
    except ValueError:
        raw = b""
    if len(raw) != 32 or _b64(raw) != secret:
        raise WeakKey(f"{what}: its secret does not decode to 32 bytes; {hint}")
    if len(set(secret)) < MIN_DISTINCT_SECRET_CHARS or len(set(key_id)) < 4:
        raise WeakKey(f"{what} is too regular to be random (a placeholder?); {hint}")
    return key


def hash_key(key: str) -> str:
    """What the key store holds for ``key``: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRecord(BaseModel):
    """One key as the key store holds it (``FQ_KEYS``, under its id)."""

    id: str = Field(pattern=r"^[0-9a-f]{16}$")
    name: str = Field(pattern=_NAME)
    scopes: list[Scope]
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    rate: float | None = Field(
        default=None, gt=0, description="Jobs per second it may submit (None: no limit)."
    )
    burst: int | None = Field(
        default=None, ge=1, description="Jobs it may submit at once (default: one second's)."
    )
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def capacity(self) -> int:
        """The token bucket's size: ``burst``, else one second's worth (at least 1)."""
        if self.burst is not None:
            return self.burst
        return max(1, int(self.rate or 1))

    def principal(self) -> Principal:
        return Principal(name=self.name, scopes=frozenset(self.scopes), key_id=self.id)

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this record's key and the record is not revoked (constant
        time in the hash comparison)."""
        return hmac.compare_digest(hash_key(key), self.hash) and self.active
