"""The run's compiled epoch programs: one per distinct epoch of the plan (:mod:`speedrun.train.plan`),
compiled ahead of time once, picked by the host per epoch; on the CPU each is a chunked epoch
(:mod:`speedrun.train.chunked`) sharing its chunk programs with the others."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax

from speedrun.system import parallel
from speedrun.train import chunked, plan as plan_lib
from speedrun.train.epoch import make_train_epoch


class EpochPrograms:
    """``programs(e, state, constants, x_train, y_train, key, epoch[, hp]) -> (state, metrics)``:
    0-based epoch ``e`` of the run, trained by its compiled program.

    Attributes: ``plan`` (one :class:`speedrun.train.plan.EpochSpec` per epoch), ``programs``
    (``{spec: compiled}``), ``compile_times`` (``{spec name: seconds}``, each spec compiled once).
    """

    def __init__(self, plan: Sequence[plan_lib.EpochSpec], programs: dict, compile_times: dict[str, float]):
        self.plan, self.programs, self.compile_times = list(plan), programs, compile_times

    def __call__(self, e: int, *args):
        return self.programs[self.plan[e]](*args)

    def __len__(self) -> int:
        return len(self.plan)

    def first(self):
        """The first epoch's compiled program (its HLO: :meth:`as_text`, its shardings)."""
        return self.programs[self.plan[0]]

    def as_text(self) -> str:
        return self.first().as_text()

    @property
    def input_shardings(self):
        """The first program's input shardings (every epoch program takes the same)."""
        return self.first().input_shardings


def compile_programs(plan: Sequence[plan_lib.EpochSpec], compile_one: Callable[[plan_lib.EpochSpec], Any]
                     ) -> tuple[EpochPrograms, float]:
    """Compile each distinct spec of ``plan`` once with ``compile_one(spec) -> compiled``:
    ``(programs, seconds in all)``."""
    programs, times = {}, {}
    for spec in plan_lib.distinct(plan):
        t0 = time.perf_counter()
        programs[spec] = compile_one(spec)
        times[spec.name()] = time.perf_counter() - t0
    return EpochPrograms(plan, programs, times), sum(times.values())


def compile_record_epochs(parts_args: tuple, plan: Sequence[plan_lib.EpochSpec], mesh: jax.sharding.Mesh,
                          args: Sequence[Any], chunk: int, hparams: Sequence[str] = (), retrace=None
                          ) -> tuple[EpochPrograms, float]:
    """The epoch programs of a record: ``parts_args = (model, tx, config, derived, normalize)``,
    ``args`` the one-program epoch's arguments (arrays or shapes, see
    :func:`speedrun.train.epoch.make_train_epoch`), ``chunk`` steps per host-called chunk on the
    CPU (:func:`speedrun.train.chunked.chunk_size`; 0: one program per epoch)."""
    if chunk:
        compiler = chunked.ChunkCompiler(*parts_args, mesh, chunk, args, hparams, retrace)
        return compile_programs(plan, compiler.compile)
    rep = parallel.replicated(mesh)
    hp = tuple(args[6:7]) if hparams else ()
    shardings = (rep,) * 6 + (rep,) * len(hp)

    def one(spec):
        fn = make_train_epoch(*parts_args, mesh=mesh, hparams=hparams, spec=spec, retrace=retrace)
        return jax.jit(fn, donate_argnums=(0,), in_shardings=shardings, out_shardings=rep).lower(*args).compile()

    return compile_programs(plan, one)
