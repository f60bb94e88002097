"""Optimization-profile derivation, grouping and selection (pure functions)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferd.engines.tensorrt.profiles import (
    BatchProfile,
    allowed_batch_sizes,
    derive_profiles,
    describe_profiles,
    pick_profile,
    profile_groups,
    replicate,
)


def ranges(profiles: tuple[BatchProfile, ...]) -> list[tuple[int, int, int]]:
    return [(p.min, p.opt, p.max) for p in profiles]


@pytest.mark.parametrize(
    ("sizes", "kwargs", "expected"),
    [
        # The scheduler's sizes for max_batch_size 64: four ranges on powers of two.
        (range(1, 65), {}, [(1, 2, 2), (3, 8, 8), (9, 16, 16), (17, 64, 64)]),
        (range(1, 129), {"max_profiles": 3}, [(1, 4, 4), (5, 16, 16), (17, 128, 128)]),
        (range(1, 9), {"max_profiles": 1}, [(1, 8, 8)]),
        # Few sizes: each is a range top; the ranges still cover every size between.
        ([1, 8, 32], {}, [(1, 1, 1), (2, 8, 8), (9, 32, 32)]),
        ([32, 8, 8, 1], {}, [(1, 1, 1), (2, 8, 8), (9, 32, 32)]),
        # Triton's preferred_batch_size become the tops.
        (range(1, 65), {"preferred": [8, 32]}, [(1, 8, 8), (9, 32, 32), (33, 64, 64)]),
        (
            range(1, 65),
            {"preferred": [2, 4, 8, 16], "max_profiles": 3},
            [(1, 8, 8), (9, 16, 16), (17, 64, 64)],
        ),
        # Preferred sizes that are not dispatchable are ignored.
        (range(1, 9), {"preferred": [100, 8], "max_profiles": 1}, [(1, 8, 8)]),
        # Exact: point profiles; the batcher pads between them.
        ([1, 2, 4, 8], {"exact": True}, [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)]),
        # A smallest size above 1: nothing below it is claimed.
        (range(5, 100), {"max_profiles": 2}, [(5, 16, 16), (17, 99, 99)]),
    ],
)
def test_derive_profiles(
    sizes: range | list[int], kwargs: dict[str, object], expected: list[tuple[int, int, int]]
) -> None:
    assert ranges(derive_profiles(list(sizes), **kwargs)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sizes", "kwargs", "message"),
    [
        ([], {}, "no batch sizes"),
        ([0, 4], {}, "positive integers"),
        (
            [1, 2, 3],
            {"exact": True, "max_profiles": 2},
            "3 exact profiles, more than the limit of 2",
        ),
        ([1], {"max_profiles": 0}, "max_profiles must be between 1 and 64"),
    ],
)
def test_derive_profiles_refuses(sizes: list[int], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derive_profiles(sizes, **kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.integers(1, 512), min_size=1, max_size=40),
    st.integers(1, 8),
    st.booleans(),
)
def test_profiles_cover_every_scheduler_size(sizes: list[int], limit: int, exact: bool) -> None:
    """Every size the scheduler may dispatch runs on some profile; ranges are
    ascending and disjoint; no more profiles than allowed; opt is in range."""
    if exact and len(set(sizes)) > limit:
        return
    profiles = derive_profiles(sizes, max_profiles=limit, exact=exact)
    assert 1 <= len(profiles) <= limit
    allowed = set(allowed_batch_sizes(profiles))
    assert set(sizes) <= allowed
    assert min(allowed) == min(sizes) and max(allowed) == max(sizes)
    for a, b in itertools.pairwise(profiles):
        assert a.max < b.min
    for p in profiles:
        assert p.min <= p.opt <= p.max
    if not exact:  # ranges leave no gaps between the smallest and the largest size
        assert allowed == set(range(min(sizes), max(sizes) + 1))


def test_batch_profile_validates() -> None:
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        BatchProfile(4, 2, 8)
    assert 3 in BatchProfile(1, 4, 4) and 5 not in BatchProfile(1, 4, 4)
    assert describe_profiles((BatchProfile(1, 1, 1), BatchProfile(2, 8, 8))) == "1, 2..8 (opt 8)"


def test_allowed_batch_sizes_is_the_union() -> None:
    profiles = (BatchProfile(1, 1, 1), BatchProfile(4, 4, 8), BatchProfile(6, 16, 16))
    assert allowed_batch_sizes(profiles) == (1, *range(4, 17))
    assert allowed_batch_sizes(()) == ()


def test_replicate_and_groups() -> None:
    base = derive_profiles(range(1, 33))
    assert profile_groups(replicate(base, 3)) == len(base)
    assert len(replicate(base, 3)) == 3 * len(base)
    # Profiles that do not repeat (a trtexec plan) are one group.
    assert profile_groups([1, 2, 3]) == 3
    assert profile_groups([1, 2, 1]) == 3
    assert profile_groups([7, 7, 7, 7]) == 1
    assert profile_groups([]) == 0
    with pytest.raises(ValueError):
        replicate(base, 0)


def _p(
    lo: int, opt: int, hi: int, rest: tuple[int, ...] = (4,)
) -> dict[str, tuple[tuple[int, ...], ...]]:
    return {"x": ((lo, *rest), (opt, *rest), (hi, *rest))}


def test_pick_profile_prefers_the_tightest_covering_opt() -> None:
    profiles = [_p(1, 2, 2), _p(3, 8, 8), _p(1, 32, 32)]
    assert pick_profile(profiles, {"x": (1, 4)}) == 0
    assert pick_profile(profiles, {"x": (3, 4)}) == 1  # opt 8 covers 3 and is smaller than 32
    assert pick_profile(profiles, {"x": (9, 4)}) == 2
    assert pick_profile(profiles, {"x": (33, 4)}) is None
    assert pick_profile(profiles, {"x": (2, 5)}) is None  # a fixed dimension differs
    assert pick_profile(profiles, {"y": (2, 4)}) is None  # the profile's input is missing
    # Overlapping profiles whose opt is below the batch: the largest opt wins.
    assert pick_profile([_p(1, 2, 16), _p(1, 4, 16)], {"x": (8, 4)}) == 1


def test_pick_profile_with_several_dynamic_dimensions() -> None:
    short = {"ids": ((1, 1), (8, 64), (8, 64))}
    long = {"ids": ((1, 65), (8, 512), (8, 512))}
    assert pick_profile([short, long], {"ids": (4, 32)}) == 0
    assert pick_profile([short, long], {"ids": (4, 100)}) == 1
    assert pick_profile([short, long], {"ids": (9, 100)}) is None
