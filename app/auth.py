"""Bearer-key checks for the admin endpoints and the (optional) item/search key.

Keys are compared with hmac.compare_digest on their UTF-8 bytes, so the time taken does not
depend on how much of a guess matches. Failures raise app.errors.AuthenticationError (401,
with `WWW-Authenticate: Bearer`) or ForbiddenError (403).

Admin endpoints with no BRIDGE_ADMIN_KEY configured answer 403 for every caller: no
credential could be right, so the message says how to enable them instead of asking for one.
"""

from __future__ import annotations

import hmac

from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr

from app.errors import AuthenticationError, ForbiddenError

ADMIN_DISABLED_MESSAGE = (
    "admin endpoints are disabled because BRIDGE_ADMIN_KEY is not set; "
    "set it and send `Authorization: Bearer <key>`"
)


def keys_match(given: str, expected: str) -> bool:
    """Constant-time comparison of two keys."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _challenge(realm: str, error: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{realm}"'
    if error:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}


def check_bearer(
    credentials: HTTPAuthorizationCredentials | None,
    expected: SecretStr,
    *,
    realm: str,
    key_name: str,
) -> None:
    """Raise AuthenticationError unless `credentials` is `Bearer <expected>`."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthenticationError(
            f"missing credentials: send `Authorization: Bearer <{key_name}>`",
            headers=_challenge(realm),
        )
    if not keys_match(credentials.credentials, expected.get_secret_value()):
        raise AuthenticationError(
            f"invalid bearer key for {realm} (expected the value of {key_name})",
            headers=_challenge(realm, "invalid_token"),
        )


def check_admin(
    credentials: HTTPAuthorizationCredentials | None, admin_key: SecretStr | None
) -> None:
    """Admin endpoints: 403 when no admin key is configured, else the bearer check."""
    if admin_key is None:
        raise ForbiddenError(ADMIN_DISABLED_MESSAGE)
    check_bearer(credentials, admin_key, realm="admin", key_name="BRIDGE_ADMIN_KEY")


def check_api(credentials: HTTPAuthorizationCredentials | None, api_key: SecretStr | None) -> None:
    """Item and search endpoints: open when no API key is configured."""
    if api_key is not None:
        check_bearer(credentials, api_key, realm="api", key_name="BRIDGE_API_KEY")
