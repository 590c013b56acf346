"""The frontal-view check: do the lung fields and the film look like a frontal chest film's?

It runs when the tags do not say which view an image is (PNG/JPEG; DICOM without a recognised
View Position or View Code Sequence) and reads two outputs of the one pass: the lung
segmenter's mask (:attr:`medcam.models.CAMOutput.lungs`) and the model input itself. A frontal
film shows two lung fields either side of the midline, of similar size, with the mediastinum
between them, and is roughly a mirror image of itself; a lateral film shows one field across
the middle and is not. The measures (:func:`view_measures`):

- ``area``: the share of the image inside the two largest lung fields;
- ``balance``: the smaller of the two fields' areas over the larger's. On a sick film the
  segmenter can join the two lungs into one field across the upper mediastinum (an inverted V
  whose bridge is too thick to cut by erosion); so when one field holds 90% of the mask and
  the next is under a fifth of it, the field is cut at its shortest column in the middle 40%
  of the width, if a column at least twice as tall stands on either side (two lungs and a
  bridge, not the one field across the middle of a lateral film), and the balance is that of
  the two parts;
- ``centre``: the share of the central tenth of the columns (45-55%) inside the lungs;
- ``mask_symmetry``: intersection over union of the lung mask and its mirror image;
- ``image_symmetry``: the correlation of the film with its mirror image (64x64, the axis
  shifted by up to 8 cells for off-centre films, the best shift kept).

Each frontal population of the validation films (children, adults, RSNA challenge films,
lung-mask films) is summarised by the mean and the Ledoit-Wolf covariance of these measures
and a limit, the 99.5% quantile of its own films' Mahalanobis distances. An image further than
the limit from every population is refused ("not a frontal chest film: ..."). The statistics
are fitted on frontal films only (``medcam fit-lung-gate``) and stored in the classifier's
checkpoint with the id of the segmenter they were fitted with; lateral films only measure
afterwards how many are refused (``benchmarks/bench_view.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medcam.errors import CheckpointError

__all__ = ["MEASURES", "METADATA_KEY", "FrontalPopulation", "ViewCheck", "view_measures"]

METADATA_KEY = "view_check"
MEASURES = ("area", "balance", "centre", "mask_symmetry", "image_symmetry")
_SHIFTS = range(-8, 9, 2)
_JOINED_SHARE = 0.9  # one field holding this share of the mask, the next under
_JOINED_BALANCE = 0.2  # this fraction of it: perhaps both lungs joined
_VALLEY_BAND = (0.3, 0.7)  # where the mediastinum's column is looked for, as shares of the width
_HUMP = 2.0  # a column this many times taller than the valley's on each side: two lungs


def view_measures(lungs: torch.Tensor, images: torch.Tensor, *, split_joined: bool = True) -> np.ndarray:
    """The :data:`MEASURES` ``(B, 5)`` of lung probabilities ``(B, 1, s, s)`` and model inputs ``(B, 1, n, n)``.

    ``split_joined=False`` measures the balance without cutting joined fields, as checks
    fitted before that rule (view-check metadata version 2) did.
    """
    masks = (lungs[:, 0] >= 0.5).cpu().numpy()
    rows = []
    for mask in masks:
        labels, n = ndimage.label(mask)
        counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        areas = np.sort(counts)[::-1] / mask.size
        big, small = (float(areas[0]) if n else 0.0), (float(areas[1]) if n > 1 else 0.0)
        balance = small / big if big else 0.0
        if split_joined and n and balance < _JOINED_BALANCE and big >= _JOINED_SHARE * areas.sum():
            balance = _split_balance(labels == int(np.argmax(counts)) + 1, balance)
        width = mask.shape[1]
        mirrored = mask[:, ::-1]
        rows.append([big + small, balance,
                     float(mask[:, int(width * 0.45):int(width * 0.55)].mean()),
                     float((mask & mirrored).sum() / max(1, (mask | mirrored).sum()))])
    return np.column_stack([np.array(rows, dtype=np.float64), _image_symmetry(images)])


def _split_balance(field: np.ndarray, balance: float) -> float:
    """The balance of ``field`` cut at its shortest column in :data:`_VALLEY_BAND`, when that column
    is a valley between two humps (two lungs and a bridge); else ``balance`` unchanged."""
    columns = field.sum(axis=0)
    low, high = (int(field.shape[1] * share) for share in _VALLEY_BAND)
    cut = low + int(np.argmin(columns[low:high]))
    if min(columns[:cut].max(), columns[cut:].max()) <= _HUMP * columns[cut]:
        return balance
    left, right = int(columns[:cut].sum()), int(columns[cut:].sum())
    return min(left, right) / max(left, right)


def _image_symmetry(images: torch.Tensor) -> np.ndarray:
    small = F.adaptive_avg_pool2d(images.float().cpu(), 64)[:, 0]
    best = torch.full((small.shape[0],), -1.0)
    for shift in _SHIFTS:
        window = torch.roll(small, shift, dims=2)[:, :, 10:54]
        a, b = window.flatten(1), window.flip(2).flatten(1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-9)
        best = torch.maximum(best, corr)
    return best.numpy().astype(np.float64)


@dataclass(frozen=True, eq=False)
class FrontalPopulation:
    """One frontal population's measures: mean, inverse covariance and the distance limit."""

    name: str
    mean: np.ndarray
    precision: np.ndarray
    limit: float
    n: int

    def distance(self, measures: np.ndarray) -> np.ndarray:
        diff = measures - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", diff, self.precision, diff).clip(min=0))


@dataclass(frozen=True, eq=False)
class ViewCheck:
    """The frontal populations the check compares with.

    Attributes:
        populations: one :class:`FrontalPopulation` per validation population.
        segmenter: the id of the lung segmenter whose masks they were fitted on.
        fitted_on: what the statistics were fitted on, in words.
        split_joined: the balance cuts joined lung fields (:func:`view_measures`); False for
            checks fitted before that rule, which are measured as they were fitted.
    """

    populations: tuple[FrontalPopulation, ...]
    segmenter: str
    fitted_on: str = ""
    split_joined: bool = True

    def scores(self, measures: np.ndarray) -> tuple[np.ndarray, list[FrontalPopulation]]:
        """Each image's distance to the nearest population over that population's limit (above 1:
        refused), and that population."""
        ratios = np.stack([p.distance(measures) / p.limit for p in self.populations])
        nearest = ratios.argmin(axis=0)
        return ratios.min(axis=0), [self.populations[i] for i in nearest]

    def reasons(self, lungs: torch.Tensor, images: torch.Tensor) -> list[str]:
        """Why each image is not a frontal chest film, or "" when it may be one."""
        measures = view_measures(lungs, images, split_joined=self.split_joined)
        scores, nearest = self.scores(measures)
        out = []
        for score, population, values in zip(scores, nearest, measures, strict=True):
            if score <= 1:
                out.append("")
                continue
            z = np.abs(values - population.mean) / np.sqrt(np.diag(np.linalg.inv(population.precision)))
            worst = MEASURES[int(z.argmax())]
            out.append(f"not a frontal chest film: its lung fields and symmetry are unlike those of frontal films "
                       f"(view score {score:.2f} > 1; most unusual: {worst.replace('_', ' ')} "
                       f"{values[int(z.argmax())]:.2f}); lateral and other views are not analysed")
        return out

    def to_metadata(self) -> dict[str, Any]:
        return {"version": 3 if self.split_joined else 2, "measures": list(MEASURES), "segmenter": self.segmenter,
                "fitted_on": self.fitted_on,
                "populations": [{"name": p.name, "mean": torch.from_numpy(p.mean).float(),
                                 "precision": torch.from_numpy(p.precision).float(), "limit": float(p.limit),
                                 "n": int(p.n)} for p in self.populations]}

    @classmethod
    def from_metadata(cls, meta: Any, where: str) -> ViewCheck:
        """Read back :meth:`to_metadata`.

        Raises:
            CheckpointError: the entry is malformed, of another version, or measures something else.
        """
        try:
            if int(meta["version"]) not in (2, 3) or list(meta["measures"]) != list(MEASURES):
                raise ValueError(f"version {meta['version']} of measures {meta['measures']}; refit it with "
                                 "medcam fit-lung-gate")
            populations = tuple(FrontalPopulation(str(p["name"]), torch.as_tensor(p["mean"]).double().numpy(),
                                                  torch.as_tensor(p["precision"]).double().numpy(), float(p["limit"]),
                                                  int(p["n"])) for p in meta["populations"])
            if not populations:
                raise ValueError("no population")
            return cls(populations, str(meta["segmenter"]), str(meta.get("fitted_on", "")),
                       split_joined=int(meta["version"]) == 3)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
            raise CheckpointError(f"{where}: the frontal-view check's {METADATA_KEY!r} metadata is malformed "
                                  f"({err})") from err
