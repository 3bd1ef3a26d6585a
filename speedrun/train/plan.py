"""The run's epoch plan: which compiled program trains each epoch.

An epoch is a sequence of *segments*, runs of consecutive steps that share one static variant: the
whitening bias trained or detached (after its freeze the step computes no gradient for it, as the
sources' ``requires_grad = False``), and the image size of a resolution curriculum. The plan is
fixed by the config and the data size before anything compiles; each distinct epoch
(:class:`EpochSpec`) is compiled once, ahead of time, and the host picks the program per epoch —
so no step carries a conditional, and the last epoch of airbench94's 9.9 is a shorter program of
its own rather than a ``lax.cond`` on every step. With data selection (``config.select``) a segment
also carries its first step's phase in the proxy's period (:mod:`speedrun.train.select`), which
fixes statically the steps on which the proxy trains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import ml_collections

from speedrun.config import ConfigError, Derived
from speedrun.train import step as step_lib


@dataclasses.dataclass(frozen=True)
class Segment:
    """``steps`` consecutive steps of one variant: ``whiten_bias`` (bool) the whitening bias is
    differentiated and trained; ``image_size`` (px) the size the augmented 32-px batch is
    resampled to (32: unchanged); ``averages``: the 1-based positions of the steps after which
    the model average updates (:class:`speedrun.train.step.Averaging`; evenly spaced); ``phase``:
    the run step of its first step modulo the data selection's proxy period (0 without selection;
    the proxy trains at the multiples of the period)."""

    steps: int
    whiten_bias: bool = True
    image_size: int = 32
    averages: tuple[int, ...] = ()
    phase: int = 0

    def variant(self) -> tuple[bool, int, int]:
        """What the segment's step program depends on besides its length and averages."""
        return self.whiten_bias, self.image_size, self.phase

    def part(self, offset: int, steps: int, period: int = 0) -> "Segment":
        """Its ``steps`` steps after the first ``offset`` (a chunk of it), with their averages and,
        for a proxy ``period`` (0: no selection), their phase."""
        return dataclasses.replace(self, steps=steps, averages=tuple(
            p - offset for p in self.averages if offset < p <= offset + steps),
            phase=(self.phase + offset) % period if period else 0)


@dataclasses.dataclass(frozen=True)
class EpochSpec:
    """One epoch's segments, in order (hashable: equal specs share one compiled program);
    ``final_average``: the run's last epoch of a record with lookahead, whose end sets the net to
    the average (airbench's ``update(net, decay=1.0)`` after the last step; not with
    ``lookahead.final_copy = False``, E1's tail)."""

    segments: tuple[Segment, ...]
    final_average: bool = False

    @property
    def steps(self) -> int:
        """Steps of the epoch (its batches drawn: the first ``steps · B`` of the permutation)."""
        return sum(s.steps for s in self.segments)

    def name(self) -> str:
        """A short label for logs: ``"97"``, ``"3+94/detached"``, ``"48@24px"``, ``"48/avg2"`` (the
        average's first update after step 2)."""
        return "+".join(f"{s.steps}{'' if s.whiten_bias else '/detached'}"
                        f"{'' if s.image_size == 32 else f'@{s.image_size}px'}"
                        f"{f'/avg{s.averages[0]}' if s.averages else ''}"
                        f"{f'~{s.phase}' if s.phase else ''}" for s in self.segments)


def full_epoch(steps_per_epoch: int) -> EpochSpec:
    """One segment of ``steps_per_epoch`` steps, bias trained, 32 px: every epoch of a record without
    a freeze, a curriculum or a shortened last epoch."""
    return EpochSpec((Segment(steps_per_epoch),))


def whiten_bias_steps(config: ml_collections.ConfigDict, derived: Derived) -> int | None:
    """Steps the whitening bias trains before it is detached: ``optimizer.whiten_bias_steps`` when
    set, else ``ceil(optimizer.whiten_bias_epochs · steps_per_epoch)`` (airbench: 3 epochs);
    ``None`` when the optimizer names neither (no freeze)."""
    opt = config.optimizer
    if opt.get("whiten_bias_steps") is not None:
        return int(opt.whiten_bias_steps)
    if opt.get("whiten_bias_epochs") is not None:
        return math.ceil(opt.whiten_bias_epochs * derived.steps_per_epoch)
    return None


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """``config.resolution``: the image size of each epoch (a resolution curriculum, e.g. Fable-5
    E1's 24/24/24/28/28/28/32/32/32); 32 for every epoch when absent.

    Raises:
      ConfigError: not one size per epoch, or a size outside 8..32 px.
    """
    sizes = config.get("resolution")
    if sizes is None:
        return (32,) * config.epochs
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != config.epochs or not all(8 <= s <= 32 for s in sizes):
        raise ConfigError(f"config.resolution must give one image size in 8..32 px per epoch ({config.epochs}); "
                          f"got {sizes} — e.g. --config.resolution='({', '.join(['32'] * config.epochs)})'")
    return sizes


def epoch_plan(config: ml_collections.ConfigDict, derived: Derived) -> list[EpochSpec]:
    """The :class:`EpochSpec` of every epoch of the run, ``len == config.epochs``.

    Epoch ``e`` runs ``min(S, T - e·S)`` steps (``S`` steps per epoch, ``T`` the run's total,
    :func:`speedrun.config.total_train_steps`); it is cut where the whitening bias stops training
    (:func:`whiten_bias_steps`) and takes the epoch's image size (:func:`image_sizes`); each
    segment lists the steps after which the model average updates (:func:`place_averages`); with
    data selection each segment's ``phase`` is its first run step modulo ``config.select.period``.
    """
    S, T = derived.steps_per_epoch, derived.total_steps
    freeze = whiten_bias_steps(config, derived)
    sel = config.get("select")
    period = int(sel.period) if sel is not None and sel.get("enabled", False) else 0
    sizes = image_sizes(config)
    la = config.get("lookahead")
    final_average = la is not None and la.enabled and la.get("final_copy", True)  # E1's tail: no final copy
    plan = []
    for e in range(config.epochs):
        start, stop = e * S, min((e + 1) * S, T)
        cuts = sorted({start, stop} | ({freeze} if freeze is not None and start < freeze < stop else set()))
        plan.append(EpochSpec(tuple(
            Segment(b - a, whiten_bias=freeze is None or a < freeze, image_size=sizes[e],
                    phase=a % period if period else 0)
            for a, b in zip(cuts[:-1], cuts[1:])), final_average and e == config.epochs - 1))
    return place_averages(plan, step_lib.averaging(config, T))


def place_averages(plan: Sequence[EpochSpec], averaging) -> list[EpochSpec]:
    """``plan`` (epochs from run step 0) with each segment's ``averages``: where
    ``averaging`` (:class:`speedrun.train.step.Averaging`, or ``None``: none) updates."""
    if averaging is None:
        return list(plan)
    out, start = [], 0
    for spec in plan:
        segs = []
        for s in spec.segments:
            segs.append(dataclasses.replace(s, averages=averaging.positions(start, s.steps)))
            start += s.steps
        out.append(dataclasses.replace(spec, segments=tuple(segs)))
    return out


def distinct(plan: Sequence[EpochSpec]) -> list[EpochSpec]:
    """The plan's distinct specs in order of first use: the programs to compile."""
    return list(dict.fromkeys(plan))
