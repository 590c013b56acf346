"""The calibration map a served model applies: ``softmax(logits / T + b)``.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) when
``b`` is absent, and Platt scaling (Platt, "Probabilistic outputs for support vector machines",
1999) generalised to K classes with a per-class bias ``b``. For two classes,
``p = sigmoid((l_1 - l_0) / T + b_1 - b_0)``: a monotone map of the logit margin, so neither
changes the ranking (AUROC) and a threshold on the margin keeps its flags. A model may carry
one map per population (:class:`PopulationCalibration`), chosen per image from its features.
Fitting either is model-making (:mod:`medcam.training.calibration`).

Example:
    >>> import torch
    >>> calibration = Calibration(temperature=2.0, bias=(0.0, 0.5))
    >>> calibration(torch.tensor([[0.0, 1.0]]))  # sigmoid(1 / 2 + 0.5)
    tensor([[0.2689, 0.7311]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Calibration", "PopulationCalibration"]


@dataclass(frozen=True)
class Calibration:
    """The map from logits to calibrated probabilities, ``softmax(logits / temperature + bias)``.

    Attributes:
        temperature: divides the logits; above 1 softens overconfident probabilities.
        bias: one value per class added after the division (Platt scaling), or None for
            temperature scaling alone. Only differences between classes matter; the fit
            leaves the first class at 0.
    """

    temperature: float = 1.0
    bias: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if self.bias is not None and not all(math.isfinite(b) for b in self.bias):
            raise ValueError(f"bias must hold finite numbers, got {self.bias!r}")

    def __call__(self, logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Calibrated probabilities of ``logits``, whose classes lie along ``dim``.

        Raises:
            ValueError: ``bias`` does not have one value per class.
        """
        z = logits / self.temperature
        if self.bias is not None:
            if len(self.bias) != z.shape[dim]:
                raise ValueError(f"bias has {len(self.bias)} values but the logits {z.shape[dim]} classes")
            shape = [1] * z.ndim
            shape[dim] = len(self.bias)
            z = z + torch.tensor(self.bias, dtype=z.dtype, device=z.device).reshape(shape)
        return torch.softmax(z, dim=dim)


@dataclass(frozen=True, eq=False)
class PopulationCalibration:
    """One :class:`Calibration` per population, the population told from the image's pooled features.

    A model trained on several populations (young children, adults) can rank each well and
    still be calibrated for none when one map serves all: its logits mean different risks in
    each. Here a linear discriminant on the pooled features the head sees (the same features
    as the image gate's) picks, per image, the population it resembles most, and that
    population's map is applied. The discriminant decides by the look of the film, not by
    the patient's age: a child's film that looks like the adults' films gets the adults' map.

    Attributes:
        populations: the names, e.g. ``("adult", "pediatric")``.
        calibrations: one map per population, in that order.
        coef: ``(P, C)`` discriminant weights; the population is the argmax of
            ``features @ coef.T + intercept``.
        intercept: ``(P,)``.
    """

    populations: tuple[str, ...]
    calibrations: tuple[Calibration, ...]
    coef: torch.Tensor
    intercept: torch.Tensor

    def __post_init__(self) -> None:
        p = len(self.populations)
        if p < 2 or len(self.calibrations) != p or len(set(self.populations)) != p:
            raise ValueError(f"need two or more distinct populations with one calibration each, got "
                             f"{list(self.populations)} and {len(self.calibrations)} calibrations")
        if self.coef.ndim != 2 or self.coef.shape[0] != p or tuple(self.intercept.shape) != (p,):
            raise ValueError(f"coef must be ({p}, C) and intercept ({p},), got {tuple(self.coef.shape)} and "
                             f"{tuple(self.intercept.shape)}")

    def population_index(self, features: torch.Tensor) -> torch.Tensor:
        """The index ``(B,)`` of the population each image of ``features`` ``(B, C)`` resembles most.

        Raises:
            ValueError: ``features`` is not ``(B, C)`` with this discriminant's ``C``.
        """
        if features.ndim != 2 or features.shape[1] != self.coef.shape[1]:
            raise ValueError(f"features must have shape (B, {self.coef.shape[1]}), got {tuple(features.shape)}")
        f = features.double()
        scores = f @ self.coef.to(f.device, torch.float64).T + self.intercept.to(f.device, torch.float64)
        return scores.argmax(dim=1)

    def select(self, features: torch.Tensor) -> list[Calibration]:
        """The map each image of ``features`` gets."""
        return [self.calibrations[i] for i in self.population_index(features).tolist()]

    def names(self, features: torch.Tensor) -> list[str]:
        """The name of the population whose map each image of ``features`` gets."""
        return [self.populations[i] for i in self.population_index(features).tolist()]

    def __call__(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities ``(B, K)`` of logits ``(B, K)``, each row by its population's map.

        Raises:
            ValueError: a map's bias does not have one value per class.
        """
        index = self.population_index(features).to(logits.device)
        k = logits.shape[-1]
        if any(c.bias is not None and len(c.bias) != k for c in self.calibrations):
            raise ValueError(f"a population's bias does not have one value per class of the logits ({k})")
        temperature = torch.tensor([c.temperature for c in self.calibrations], dtype=logits.dtype,
                                   device=logits.device)
        bias = torch.tensor([c.bias if c.bias is not None else (0.0,) * k for c in self.calibrations],
                            dtype=logits.dtype, device=logits.device)
        return torch.softmax(logits / temperature[index, None] + bias[index], dim=-1)

    def to_metadata(self) -> dict[str, Any]:
        """Lists, numbers and tensors for checkpoint metadata (``weights_only=True`` loadable)."""
        return {"version": 1, "method": "linear discriminant of the pooled features",
                "populations": list(self.populations),
                "temperature": [c.temperature for c in self.calibrations],
                "class_bias": [None if c.bias is None else list(c.bias) for c in self.calibrations],
                "coef": self.coef.detach().double().cpu().clone(),
                "intercept": self.intercept.detach().double().cpu().clone()}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> PopulationCalibration:
        """Read back what :meth:`to_metadata` wrote.

        Raises:
            ValueError: an entry is missing, of a newer version, or malformed.
        """
        try:
            if int(meta.get("version", 0)) > 1:
                raise ValueError(f"population calibration version {meta['version']} is newer than this medcam reads")
            maps = tuple(Calibration(float(t), None if b is None else tuple(float(v) for v in b))
                         for t, b in zip(meta["temperature"], meta["class_bias"], strict=True))
            return cls(tuple(str(p) for p in meta["populations"]), maps,
                       torch.as_tensor(meta["coef"], dtype=torch.float64),
                       torch.as_tensor(meta["intercept"], dtype=torch.float64))
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"malformed population calibration ({err})") from err
