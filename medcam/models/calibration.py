"""The calibration map a served model applies: ``softmax(logits / T + b)``.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) when
``b`` is absent, and Platt scaling (Platt, "Probabilistic outputs for support vector machines",
1999) generalised to K classes with a per-class bias ``b``. For two classes,
``p = sigmoid((l_1 - l_0) / T + b_1 - b_0)``: a monotone map of the logit margin, so neither
changes the ranking (AUROC) and a threshold on the margin keeps its flags. Fitting it is
model-making (:mod:`medcam.training.calibration`).

Example:
    >>> import torch
    >>> calibration = Calibration(temperature=2.0, bias=(0.0, 0.5))
    >>> calibration(torch.tensor([[0.0, 1.0]]))  # sigmoid(1 / 2 + 0.5)
    tensor([[0.2689, 0.7311]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Calibration"]


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
