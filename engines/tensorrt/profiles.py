"""TensorRT optimization profiles as plain data: derivation, grouping, selection.

No TensorRT import here; everything is a pure function over tuples so it is
tested on machines without a GPU.

How batch sizes map to profiles (the contract with the batcher)
---------------------------------------------------------------

``inferd build-engine`` derives the plan's profiles from the batch sizes the
scheduler will dispatch (``derive_profiles``). By default the sizes are split
into at most ``max_profiles`` contiguous ranges that together cover every
size from the smallest to the largest; each range is one profile with
``min`` = one more than the previous range's top (the smallest size for the
first), ``opt`` = ``max`` = its top.
TensorRT tunes kernels at ``opt``; putting ``opt`` at the top of the range
tunes for the size a loaded server dispatches most (full batches), and every
size inside the range still runs. ``exact=True`` makes one point profile
(min = opt = max) per size instead: the best kernels at each size, but the
batcher pads every other size up to the next one.

At load, the engine reports ``signature.batch_sizes`` = the union of the
profiles' ``[min, max]`` ranges (``allowed_batch_sizes``): exactly the sizes
the plan can run. The batcher dispatches only those and pads a batch up to
the next one (``server.scheduler.planners.Planner.cover``), so it never sends a size
the plan cannot run; with range profiles there is nothing to pad, with
point profiles it pads up to the next point.

Execution contexts: TensorRT requires that execution contexts used at the
same time hold different optimization profiles when the engine has dynamic
shapes. ``build-engine --contexts N`` therefore repeats the profile set N
times (``replicate``); context i owns copy i and switches only among its own
profiles. At load ``profile_groups`` finds the repeat, and the engine runs
as many contexts as there are copies (at most the configured instance count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: min, opt, max shapes of one input in one profile.
ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
#: One optimization profile: input name -> its shape range.
ProfileShapes = Mapping[str, ShapeRange]

DEFAULT_MAX_PROFILES = 4
#: More profiles than this make builds very slow and plans large.
MAX_PROFILES = 64


@dataclass(frozen=True, slots=True)
class BatchProfile:
    """The batch dimension of one optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"a batch profile needs 1 <= min <= opt <= max, got "
                f"min={self.min} opt={self.opt} max={self.max}"
            )

    def __contains__(self, batch: object) -> bool:
        return isinstance(batch, int) and self.min <= batch <= self.max

    def describe(self) -> str:
        if self.min == self.max:
            return str(self.min)
        return f"{self.min}..{self.max} (opt {self.opt})"


def _clean_sizes(batch_sizes: Sequence[int]) -> list[int]:
    sizes = sorted(set(batch_sizes))
    if not sizes:
        raise ValueError("no batch sizes given")
    bad = [s for s in sizes if not isinstance(s, int) or isinstance(s, bool) or s < 1]
    if bad:
        raise ValueError(f"batch sizes must be positive integers, got {bad[0]!r}")
    return sizes


def derive_profiles(
    batch_sizes: Sequence[int],
    *,
    max_profiles: int = DEFAULT_MAX_PROFILES,
    exact: bool = False,
    preferred: Sequence[int] = (),
) -> tuple[BatchProfile, ...]:
    """Profiles covering exactly ``batch_sizes`` (the sizes the scheduler
    will dispatch), ascending and disjoint.

    * ``exact``: one point profile per size; more sizes than
      ``max_profiles`` is an error (give fewer sizes or drop ``exact``).
    * otherwise the range from the smallest to the largest size is cut into
      at most ``max_profiles`` contiguous ranges. The range tops are
      ``preferred`` sizes (Triton's ``preferred_batch_size``, where a static
      batcher dispatches) when given, else the given sizes themselves when
      there are few enough, else geometric steps between the smallest and
      largest size, on powers of two where the sizes allow (small batches
      get tight ranges, large ones wide ones).
      Each range is one profile: ``min`` = previous top + 1 (the smallest
      size for the first), ``opt`` = ``max`` = its top.

    Range profiles therefore also run sizes between the given ones (3 when
    the sizes are 1, 2, 4); ``allowed_batch_sizes`` reports the real set.
    """
    if not 1 <= max_profiles <= MAX_PROFILES:
        raise ValueError(f"max_profiles must be between 1 and {MAX_PROFILES}")
    sizes = _clean_sizes(batch_sizes)
    if exact:
        if len(sizes) > max_profiles:
            raise ValueError(
                f"{len(sizes)} batch sizes need {len(sizes)} exact profiles, more than "
                f"the limit of {max_profiles}; give fewer sizes or use range profiles"
            )
        return tuple(BatchProfile(s, s, s) for s in sizes)
    tops = _group_tops(sizes, max_profiles, preferred)
    profiles: list[BatchProfile] = []
    low = sizes[0]
    for top in tops:
        profiles.append(BatchProfile(low, top, top))
        low = top + 1
    return tuple(profiles)


def _group_tops(sizes: list[int], max_profiles: int, preferred: Sequence[int]) -> list[int]:
    largest = sizes[-1]
    wanted = sorted({p for p in preferred if p in sizes and p < largest})
    if wanted:
        # Keep the largest preferred sizes when there are too many.
        return [*wanted[-(max_profiles - 1) :], largest] if max_profiles > 1 else [largest]
    if len(sizes) <= max_profiles:
        return sizes
    smallest = sizes[0]
    tops: list[int] = []
    ratio = largest / smallest
    for i in range(1, max_profiles):
        bound = smallest * ratio ** (i / max_profiles)
        # The largest size at or below the geometric bound (never below the
        # previous top, never the largest: that one closes the last group).
        # Powers of two are preferred as tops (round numbers for operators).
        candidates = [s for s in sizes if s <= bound + 1e-9 and s < largest]
        candidates = [s for s in candidates if not tops or s > tops[-1]]
        powers = [s for s in candidates if s & (s - 1) == 0]
        if powers or candidates:
            tops.append((powers or candidates)[-1])
    tops.append(largest)
    return tops


def replicate(profiles: Sequence[T], contexts: int) -> tuple[T, ...]:
    """``contexts`` consecutive copies of the profile set (one per execution
    context; see the module docstring)."""
    if contexts < 1:
        raise ValueError("contexts must be at least 1")
    return tuple(profiles) * contexts


def profile_groups(profiles: Sequence[T]) -> int:
    """The length of the shortest prefix of ``profiles`` that, repeated,
    makes the whole sequence; the number of copies is ``len // result``.

    A plan built by ``build-engine --contexts N`` gives its base set; a plan
    from elsewhere (``trtexec``) whose profiles do not repeat is one group.
    """
    n = len(profiles)
    for size in range(1, n + 1):
        if n % size == 0 and all(profiles[i] == profiles[i % size] for i in range(n)):
            return size
    return n


def allowed_batch_sizes(profiles: Sequence[BatchProfile]) -> tuple[int, ...]:
    """Every batch size some profile runs: the union of their ranges, ascending."""
    sizes: set[int] = set()
    for p in profiles:
        sizes.update(range(p.min, p.max + 1))
    return tuple(sorted(sizes))


def describe_profiles(profiles: Sequence[BatchProfile]) -> str:
    return ", ".join(p.describe() for p in profiles) or "none"


def pick_profile(
    profiles: Sequence[ProfileShapes], shapes: Mapping[str, tuple[int, ...]]
) -> int | None:
    """The index (within ``profiles``) of the profile to run input ``shapes``
    on, or None when no profile admits them.

    A profile admits the shapes when every input named in it lies within its
    min..max dimension by dimension. Among those, one whose ``opt`` is at
    least the shape in every dimension is preferred (kernels were tuned for
    that size or larger), the smallest such ``opt`` first; failing that, the
    largest ``opt``.
    """
    best: tuple[int, float, int] | None = None  # (rank, key, index)
    for index, profile in enumerate(profiles):
        fits = True
        covered = True
        volume = 0.0
        for name, (lo, opt, hi) in profile.items():
            shape = shapes.get(name)
            if shape is None or len(shape) != len(lo):
                fits = False
                break
            if any(not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                fits = False
                break
            covered = covered and all(s <= o for s, o in zip(shape, opt, strict=True))
            volume += math.prod(opt)
        if not fits:
            continue
        # Covered profiles rank first, smallest opt volume wins; otherwise the
        # largest opt volume wins.
        candidate = (0, volume, index) if covered else (1, -volume, index)
        if best is None or candidate < best:
            best = candidate
    return None if best is None else best[2]
