"""Feature freshness: the optional ``feature_timestamp`` request parameter
(seconds since the epoch: when the request's features were computed)."""

from __future__ import annotations

from collections.abc import Mapping

from inferd.server.errors import InvalidArgument

PARAMETER = "feature_timestamp"

#: Seconds; from fresh (streaming features) to a day old (batch features).
AGE_BUCKETS = (
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    86400.0,
    7 * 86400.0,
)


def feature_timestamp(parameters: Mapping[str, object]) -> float | None:
    """The parameter's value, or None when the request has none; raises
    ``InvalidArgument`` for anything but a non-negative number."""
    value = parameters.get(PARAMETER)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidArgument(
            f"parameter '{PARAMETER}' must be a non-negative number (seconds since the epoch)"
        )
    if value > 1e11:  # milliseconds, a common mistake, would read as year 5000+
        raise InvalidArgument(
            f"parameter '{PARAMETER}' is in seconds since the epoch; {value} looks like "
            "milliseconds"
        )
    return float(value)


def age_s(timestamp: float, now: float) -> float:
    """How old the features are; a timestamp from the future (clock skew) counts as 0."""
    return max(0.0, now - timestamp)
