"""Whether a Ray cluster can run the scoring pipeline at all, checked before any work is sent.

Ray never refuses a request that its cluster can never meet: it queues it. The Ray engine
(:mod:`medcam.scoring.ray_engine`) needs, at the same time, its model actors (each holding
its CPUs, and one GPU with ``cuda``, for as long as the run lasts) and at least one more CPU
for the decoding tasks, which feed those actors. The write tasks of ``--cams`` and
``--regions`` take turns with the decoding tasks on that CPU, so they need no CPU of their
own. On a cluster smaller than that (``ray start --head --num-cpus 2`` and one actor of
2 CPUs), nothing could ever start and the run would wait forever without a word; instead
:func:`check_resources` refuses it at once and says what to change.

Example:
    >>> request = requested_resources(actors=1, actor_cpus=2.0, device="cpu")
    >>> request.resources
    {'CPU': 3.0, 'GPU': 0.0}
    >>> check_resources(request, {"CPU": 2.0}, where="the Ray cluster at 10.0.0.5:6379")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medcam.errors.ConfigError: medcam cannot score on the Ray cluster at 10.0.0.5:6379: ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from medcam.errors import ConfigError

__all__ = ["DECODE_CPUS", "RayRequest", "check_resources", "requested_resources"]

DECODE_CPUS = 1.0
"""CPUs of one decoding task (and of one write task, which takes turns with them)."""

_EPSILON = 1e-6  # Ray reports resources as floats (fractions of a CPU are allowed)


@dataclass(frozen=True)
class RayRequest:
    """What the Ray engine must hold at once for its pipeline to move.

    Attributes:
        actors: model actors, alive for the whole run.
        actor_cpus: CPUs each model actor reserves.
        actor_gpus: GPUs each model actor reserves (1 with ``cuda``, else 0).
        task_cpus: CPUs for the decoding tasks (and the write tasks, which take turns with
            them); one task at a time is enough for the pipeline to move.
        writes: whether the run writes files (``--cams`` or ``--regions``), which the
            message mentions.
    """

    actors: int
    actor_cpus: float
    actor_gpus: float = 0.0
    task_cpus: float = DECODE_CPUS
    writes: bool = False

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ConfigError(f"actors must be at least 1, got {self.actors!r}")
        if self.actor_cpus < 0 or self.actor_gpus < 0 or self.task_cpus <= 0:
            raise ConfigError(f"CPU and GPU counts cannot be negative, got actor_cpus={self.actor_cpus!r}, "
                              f"actor_gpus={self.actor_gpus!r}, task_cpus={self.task_cpus!r}")

    @property
    def cpus(self) -> float:
        """CPUs needed at once: every actor's, plus one task's."""
        return self.actors * self.actor_cpus + self.task_cpus

    @property
    def gpus(self) -> float:
        """GPUs needed at once: every actor's."""
        return self.actors * self.actor_gpus

    @property
    def resources(self) -> dict[str, float]:
        """The request in Ray's own names (``ray.cluster_resources()`` keys)."""
        return {"CPU": self.cpus, "GPU": self.gpus}


def requested_resources(actors: int, actor_cpus: float, device: str, *, writes: bool = False,
                        task_cpus: float = DECODE_CPUS) -> RayRequest:
    """What :func:`~medcam.scoring.ray_engine.score_ray` will ask Ray for.

    Args:
        actors: model actors.
        actor_cpus: CPUs reserved by each of them.
        device: ``cpu``, or ``cuda`` for one GPU per actor.
        writes: the run writes CAM or region files (``--cams``, ``--regions``).
        task_cpus: CPUs of one decoding (or write) task.
    """
    return RayRequest(actors=actors, actor_cpus=actor_cpus, actor_gpus=1.0 if device == "cuda" else 0.0,
                      task_cpus=task_cpus, writes=writes)


def check_resources(request: RayRequest, cluster: Mapping[str, float], *, where: str = "the Ray cluster",
                    local: bool = False) -> None:
    """Refuse a run that ``cluster`` can never hold, in a message that says what to change.

    Args:
        request: what the run needs at once (:func:`requested_resources`).
        cluster: the cluster's total resources, as ``ray.cluster_resources()`` gives them; a
            missing ``CPU`` or ``GPU`` key counts as none.
        where: the cluster, as the message names it ("the Ray cluster at 10.0.0.5:6379").
        local: the cluster is a Ray instance on this machine rather than one the user
            started; the advice is then about this machine rather than ``ray start``.

    Raises:
        ConfigError: the cluster has fewer CPUs or GPUs in total than the run needs at once.
    """
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    short_cpus = request.cpus > cpus + _EPSILON
    short_gpus = request.gpus > gpus + _EPSILON
    if not short_cpus and not short_gpus:
        return
    needs, has = [], []
    if short_cpus:
        needs.append(f"{_count(request.cpus, 'CPU')} at once ({_count(request.actors, 'model actor')} x "
                     f"{_count(request.actor_cpus, 'CPU')}, plus {_number(request.task_cpus)} for the decoding"
                     f"{' and file-writing' if request.writes else ''} tasks)")
        has.append(_count(cpus, "CPU"))
    if short_gpus:
        needs.append(f"{_count(request.gpus, 'GPU')} (one per model actor with --device cuda)")
        has.append(_count(gpus, "GPU"))
    message = (f"medcam cannot score on {where}: it needs {' and '.join(needs)}, and the cluster has "
               f"{' and '.join(has)} in all, so Ray would wait for them forever. ")
    fixes = _fixes(request, cpus, gpus, short_cpus, short_gpus, local)
    raise ConfigError(message + "To fix it: " + "; or ".join(fixes) + ".")


def _fixes(request: RayRequest, cpus: float, gpus: float, short_cpus: bool, short_gpus: bool,
           local: bool) -> list[str]:
    """What the user can change, most direct first."""
    fixes = []
    fitting = _actors_that_fit(request, cpus, gpus)
    if 1 <= fitting < request.actors:
        fixes.append(f"use fewer model actors (--actors {fitting})")
    if short_cpus:
        spare = (cpus - request.task_cpus) / request.actors
        smallest = 1.0 if request.actor_gpus else 2.0  # on CPU, 1 would fuse decoding into the actors
        if smallest <= spare + _EPSILON and spare < request.actor_cpus:
            fixes.append(f"reserve fewer CPUs per model actor (actor_cpus={_number(math.floor(spare))})")
    if short_gpus:
        fixes.append("use --device cpu" if gpus < 1 else f"use at most --actors {int(gpus + _EPSILON)} with "
                     "--device cuda")
    if local:
        fixes.append(f"run on a machine with at least {_count(request.cpus, 'CPU')}"
                     f"{' and ' + _count(request.gpus, 'GPU') if short_gpus else ''}, or on a Ray cluster "
                     "that has them (--ray-address)")
        if not request.gpus:
            fixes.append("use --engine local, which reserves no CPUs")
    else:
        resources = [f"--num-cpus {_number(math.ceil(request.cpus - _EPSILON))}"] if short_cpus else []
        resources += [f"--num-gpus {_number(math.ceil(request.gpus - _EPSILON))}"] if short_gpus else []
        fixes.append(f"give the cluster more: start its head with ray start --head {' '.join(resources)} "
                     "(or more), or join more nodes to it")
    return fixes


def _actors_that_fit(request: RayRequest, cpus: float, gpus: float) -> int:
    """The most model actors the cluster can hold beside one decoding task."""
    by_cpu = (cpus - request.task_cpus) / request.actor_cpus if request.actor_cpus else math.inf
    by_gpu = gpus / request.actor_gpus if request.actor_gpus else math.inf
    most = min(by_cpu, by_gpu)
    return math.floor(most + _EPSILON) if math.isfinite(most) and most > 0 else 0


def _number(value: float) -> str:
    return f"{value:g}"


def _count(value: float, noun: str) -> str:
    return f"{_number(value)} {noun}{'' if value == 1 else 's'}"
