"""The gates: pure functions from one model's lifecycle to the next.

Each takes the current ``ModelLifecycle`` and what this replica knows (its
ready versions, the version serving unversioned requests) and returns the
new lifecycle, or raises ``InvalidArgument`` (a bad request) or
``FailedPrecondition`` (a gate refused). Nothing here does I/O.

Stages move along::

    development -> staging -> production      (promote; loaded and ready)
    staging <-> shadow, staging -> development, archived -> development | staging
    any but production -> archived

Production is the champion's stage and only the champion's: promote and
rollback move it. A challenger that answers callers (canary, A/B, blue/green)
must be in staging; a shadow challenger in staging or shadow. Rollback is
the emergency lever and skips the stage gates, but never routes to a version
that is not ready.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from inferd.server.errors import FailedPrecondition, InvalidArgument
from inferd.server.lifecycle.state import HISTORY, Guardrails, ModelLifecycle, RouteMode, Stage

_MOVES: dict[Stage, frozenset[Stage]] = {
    Stage.DEVELOPMENT: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.STAGING: frozenset({Stage.SHADOW, Stage.DEVELOPMENT, Stage.ARCHIVED}),
    Stage.SHADOW: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset(),
    Stage.ARCHIVED: frozenset({Stage.DEVELOPMENT, Stage.STAGING}),
}

#: Stages a challenger may be in, by route mode.
CHALLENGER_STAGES: dict[RouteMode, frozenset[Stage]] = {
    RouteMode.CANARY: frozenset({Stage.STAGING}),
    RouteMode.AB: frozenset({Stage.STAGING}),
    RouteMode.BLUE_GREEN: frozenset({Stage.STAGING}),
    RouteMode.SHADOW: frozenset({Stage.STAGING, Stage.SHADOW}),
}


def _names(stages: Collection[Stage]) -> str:
    return " or ".join(sorted(s.value for s in stages))


def set_route(
    current: ModelLifecycle,
    *,
    model: str,
    challenger: int,
    mode: RouteMode,
    weight: float,
    guardrails: Guardrails,
    serving: int,
    ready: Collection[int],
) -> ModelLifecycle:
    """Set (or with ``challenger`` 0, clear) the challenger. The first route
    of a model pins the version serving now as its champion (production)."""
    if challenger < 0:
        raise InvalidArgument("challenger must be a version number (0 clears the route)")
    if challenger == 0:
        return dataclasses.replace(
            current, challenger=0, mode=RouteMode.CANARY, weight=0.0, guardrails=Guardrails()
        )
    if not 0.0 <= weight <= 1.0:  # also refuses NaN
        raise InvalidArgument(f"weight must be a share in [0, 1], not {weight}")
    if mode is RouteMode.SHADOW and weight == 0:
        raise InvalidArgument("a shadow route needs a weight > 0: the share of traffic to mirror")
    if mode is RouteMode.BLUE_GREEN:
        weight = 0.0  # standby: no traffic until promoted
    problems = guardrails.problems()
    if problems:
        raise InvalidArgument(problems[0])
    champion = current.champion or serving
    if champion == 0:
        raise FailedPrecondition(f"model '{model}' has no ready version to be the champion")
    if challenger == champion:
        raise InvalidArgument(f"version {challenger} is the champion; pick another challenger")
    allowed = CHALLENGER_STAGES[mode]
    stage = current.stage(challenger)
    if stage not in allowed:
        raise FailedPrecondition(
            f"version {challenger} of '{model}' is in stage {stage.value}; a {mode.value} "
            f"challenger must be in {_names(allowed)}"
        )
    if challenger not in ready:
        raise FailedPrecondition(
            f"version {challenger} of '{model}' is not loaded and ready; set its stage to "
            "staging to load it"
        )
    return dataclasses.replace(
        current.staged({champion: Stage.PRODUCTION}),
        champion=champion,
        challenger=challenger,
        mode=mode,
        weight=weight,
        guardrails=guardrails,
        tripped="",
    )


def set_stage(current: ModelLifecycle, *, model: str, version: int, stage: Stage) -> ModelLifecycle:
    """Move ``version`` to ``stage`` (not production: that is ``promote``)."""
    if version < 1:
        raise InvalidArgument("version must be a positive version number")
    if stage is Stage.PRODUCTION:
        raise InvalidArgument("production is reached by promote")
    was = current.stage(version)
    if was is stage:
        return current
    if version == current.champion:
        raise FailedPrecondition(
            f"version {version} is the champion of '{model}'; promote another version or "
            "roll back to change its stage"
        )
    if stage not in _MOVES[was]:
        allowed = _MOVES[was]
        raise FailedPrecondition(
            f"version {version} of '{model}' cannot move from {was.value} to {stage.value}"
            + (f" (it may move to {_names(allowed)})" if allowed else "")
        )
    if version == current.challenger and stage not in CHALLENGER_STAGES[current.mode]:
        raise FailedPrecondition(
            f"version {version} is the {current.mode.value} challenger of '{model}'; clear the "
            "route or roll back first"
        )
    return current.staged({version: stage})


def promote(
    current: ModelLifecycle,
    *,
    model: str,
    version: int,
    serving: int,
    ready: Collection[int],
) -> ModelLifecycle:
    """Make ``version`` (0: the challenger) the champion. The old champion is
    archived and kept as the rollback target."""
    if version < 0:
        raise InvalidArgument("version must be a version number (0: the challenger)")
    version = version or current.challenger
    if version == 0:
        raise FailedPrecondition(f"'{model}' has no challenger to promote; name a version")
    old = current.champion or serving
    if version == old:
        raise FailedPrecondition(f"version {version} is already the champion of '{model}'")
    stage = current.stage(version)
    if stage is not Stage.STAGING:
        raise FailedPrecondition(
            f"only a staging version can be promoted; version {version} of '{model}' is in "
            f"stage {stage.value}"
        )
    if version not in ready:
        raise FailedPrecondition(
            f"version {version} of '{model}' is not loaded and ready; it cannot take production "
            "traffic"
        )
    changes = {version: Stage.PRODUCTION}
    previous = current.previous
    if old:
        changes[old] = Stage.ARCHIVED
        previous = (*previous, old)[-HISTORY:]
    after = dataclasses.replace(
        current.staged(changes), champion=version, previous=previous, tripped=""
    )
    if after.challenger == version:
        after = dataclasses.replace(
            after, challenger=0, mode=RouteMode.CANARY, weight=0.0, guardrails=Guardrails()
        )
    return after


def rollback(current: ModelLifecycle, *, model: str, ready: Collection[int]) -> ModelLifecycle:
    """Drop the challenger if there is one; otherwise restore the previous
    champion. The version rolled back is archived."""
    if current.challenger:
        return drop_challenger(current, current.challenger, "")
    if not current.previous:
        raise FailedPrecondition(f"'{model}' has no challenger and no previous champion")
    target = current.previous[-1]
    if target not in ready:
        raise FailedPrecondition(
            f"the previous champion of '{model}', version {target}, is not loaded and ready"
        )
    changes = {target: Stage.PRODUCTION}
    if current.champion:
        changes[current.champion] = Stage.ARCHIVED
    return dataclasses.replace(
        current.staged(changes), champion=target, previous=current.previous[:-1], tripped=""
    )


def drop_challenger(current: ModelLifecycle, challenger: int, why: str) -> ModelLifecycle:
    """Take ``challenger`` off the route (archived) if it is still the
    challenger; unchanged otherwise, so replicas that trip at once agree."""
    if current.challenger != challenger or challenger == 0:
        return current
    return dataclasses.replace(
        current.staged({challenger: Stage.ARCHIVED}),
        challenger=0,
        mode=RouteMode.CANARY,
        weight=0.0,
        guardrails=Guardrails(),
        tripped=why,
    )
