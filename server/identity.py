"""Who is calling: set by the authentication interceptor for the duration of
an RPC, read by whatever records or authorizes actions (audit log, roles)."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


ANONYMOUS = Principal("anonymous")

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "inferd_principal", default=ANONYMOUS
)


def acting_for(principals: Sequence[Principal]) -> Principal:
    """Who work done for all of ``principals`` at once acts as (a batch's BLS
    call): the one principal, or one holding only the roles they all hold."""
    first = principals[0]
    if all(p == first for p in principals):
        return first
    names = sorted({p.name for p in principals})
    roles = frozenset.intersection(*(p.roles for p in principals))
    return Principal(" and ".join(names) if len(names) < 4 else f"{len(names)} callers", roles)


def current_principal() -> Principal:
    return _current.get()


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal]) -> None:
    _current.reset(token)
