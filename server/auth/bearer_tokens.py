"""Static bearer tokens: the tokens file (``--auth-tokens-file``) and its lookups.

Only SHA-256 digests of the tokens are kept in memory; a presented token is
hashed and looked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from inferd.server.auth.watched_file import AuthConfigError, WatchedFile
from inferd.server.identity import Principal

log = logging.getLogger("inferd.auth")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _roles(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) and r for r in value):
        raise AuthConfigError(f"{where}: 'roles' must be a list of role names")
    return frozenset(value)


def parse_tokens(text: str, source: str = "tokens file") -> dict[bytes, Principal]:
    """The tokens file's JSON -> {sha256 digest: principal}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise AuthConfigError(f"{source}: expected an object mapping tokens to holders")
    out: dict[bytes, Principal] = {}
    for i, (key, holder) in enumerate(data.items()):
        where = f"{source}: entry {i + 1}"
        if not isinstance(holder, dict) or not isinstance(holder.get("name"), str):
            raise AuthConfigError(f"{where}: expected {{'name': ..., 'roles': [...]}}")
        principal = Principal(holder["name"], _roles(holder.get("roles", []), where))
        if key.startswith("sha256:"):
            try:
                digest = bytes.fromhex(key[len("sha256:") :])
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise AuthConfigError(f"{where}: 'sha256:' must be followed by 64 hex digits")
        else:
            if len(key) < 16:
                raise AuthConfigError(f"{where}: tokens must be at least 16 characters")
            digest = _digest(key)
        out[digest] = principal
    return out


class TokenStore:
    """Static bearer tokens from the tokens file."""

    def __init__(self, path: Path) -> None:
        self._file = WatchedFile(path)
        self._tokens = parse_tokens(self._file.read(), str(path))

    def reload(self, *, force: bool = False) -> None:
        if not self._file.changed(force=force):
            return
        try:
            self._tokens = parse_tokens(self._file.read(), str(self._file.path))
        except AuthConfigError as exc:
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
            return
        log.info("tokens file reloaded: %d token(s)", len(self._tokens))

    def lookup(self, token: str) -> Principal | None:
        self.reload()
        # A dict keyed by the digest: timing can only reveal digest bytes,
        # which do not help to forge a token.
        return self._tokens.get(_digest(token))
