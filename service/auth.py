"""API keys: ``X-API-Key`` checked in constant time against the configured keys.

A job or batch records the SHA-256 of the key that created it (never the key), and only
that key may read or cancel it.
"""

from __future__ import annotations

import hashlib
import hmac

from service.errors import Forbidden, InvalidAPIKey, MissingAPIKey


def key_owner(key: str) -> str:
    """The owner id stored with a job: the key's SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(presented: str | None, configured: tuple[str, ...]) -> str | None:
    """The caller's owner id; ``None`` when the API has no keys (open mode)."""
    if not configured:
        return None
    if not presented:
        raise MissingAPIKey("this API needs an API key: send it in the X-API-Key header")
    accepted = False
    for key in configured:
        # No early exit: the time taken does not tell which key (or how much of one) matched.
        accepted |= hmac.compare_digest(presented.encode(), key.encode())
    if not accepted:
        raise InvalidAPIKey("the X-API-Key is not one of this service's keys")
    return key_owner(presented)


def authenticate_admin(presented: str | None, admin_keys: tuple[str, ...]) -> str:
    """The owner id of an admin key; 401 without a key, 403 for any other key (and for every
    key when no admin key is configured: nobody may change the models then)."""
    if not presented:
        raise MissingAPIKey("changing the models needs an admin key in the X-API-Key header")
    if not admin_keys:
        raise Forbidden(
            "this service has no admin keys (HYCAS_ADMIN_API_KEYS): models cannot be changed "
            "over the API"
        )
    try:
        return authenticate(presented, admin_keys)  # type: ignore[return-value]
    except InvalidAPIKey:
        raise Forbidden("this key may not change the models: that needs an admin key") from None


def may_access(record_owner: str | None, caller: str | None) -> bool:
    """Whether ``caller`` may read or cancel a record created by ``record_owner``."""
    if caller is None:
        return True
    return record_owner is not None and hmac.compare_digest(record_owner, caller)
