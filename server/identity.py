"""Who is calling: set by the authentication interceptor for the duration of
an RPC, read by whatever records or authorizes actions (audit log, roles)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


ANONYMOUS = Principal("anonymous")

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "inferd_principal", default=ANONYMOUS
)


def current_principal() -> Principal:
    return _current.get()


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal]) -> None:
    _current.reset(token)
