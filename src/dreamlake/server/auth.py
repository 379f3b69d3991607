"""Who may do what: bearer tokens (only their hash is stored), scoped to workspaces, maybe read-only.

A dreamlake token is ``dl_`` and 43 random URL-safe characters. JWTs (HS256) are accepted when a
secret is configured (their ``workspaces`` claim says where they reach), and under ``--dev`` the
self-signed tokens the 0.2.x client makes from ``user_name``, which reach every workspace: ``--dev``
binds to loopback only, for one person's machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

import jwt

from .._schema.timestamps import utc_now_iso
from .config import DEV_JWT_SECRET, ServerConfig
from .errors import ApiError
from .hot.base import HotTier, Token


@dataclasses.dataclass(frozen=True)
class Grant:
    """What the caller's token allows: ``workspaces`` None means all of them."""

    workspaces: frozenset[str] | None
    read_only: bool

    def reaches(self, workspace: str) -> bool:
        """Whether the token may see ``workspace`` at all."""
        return self.workspaces is None or workspace in self.workspaces

    def check_write(self) -> None:
        """Raise 403 unless the token may write."""
        if self.read_only:
            raise ApiError(403, "read-only token", "this token may read but not write")


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(hot: HotTier, workspaces: list[str], read_only: bool) -> str:
    """Make a token, store its hash, and return the token (shown once, never stored)."""
    token = "dl_" + secrets.token_urlsafe(32)
    await hot.add_token(Token(hash_token(token), tuple(workspaces), read_only, utc_now_iso()))
    return token


async def authenticate(hot: HotTier, config: ServerConfig, header: str | None) -> Grant:
    """The grant of the request's ``Authorization`` header, or a 401."""
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise ApiError(401, "missing token", "send 'Authorization: Bearer <token>'")
    token = header[7:].strip()
    if token.count(".") == 2:
        return _jwt_grant(config, token)
    stored = await hot.find_token(hash_token(token))
    if stored is None:
        raise ApiError(401, "invalid token", "the token is unknown; make one with 'dreamlake token create'")
    return Grant(frozenset(stored.workspaces), stored.read_only)


def _jwt_grant(config: ServerConfig, token: str) -> Grant:
    for secret, dev in ((config.jwt_secret, False), (DEV_JWT_SECRET if config.dev else None, True)):
        if secret is None:
            continue
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            continue
        if dev:
            return Grant(None, False)
        workspaces = claims.get("workspaces")
        if not isinstance(workspaces, list) or not all(isinstance(w, str) for w in workspaces):
            raise ApiError(403, "token has no workspaces", "the JWT needs a 'workspaces' list claim")
        return Grant(frozenset(workspaces), bool(claims.get("readOnly")))
    hint = "" if config.dev else " (0.2.x self-made tokens are accepted only by 'dreamlake serve --dev')"
    raise ApiError(401, "invalid token", "the JWT is not signed by a key this server trusts" + hint)
