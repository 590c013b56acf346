"""The image gate: how far an image's features lie from the training images', from the same pass.

:class:`~medcam.models.cam.SinglePassCAM` returns, beside the logits and maps, the pooled
features ``f`` ``(B, C)`` that the linear head scores. Following Lee et al. (NeurIPS 2018,
"A simple unified framework for detecting out-of-distribution samples and adversarial
attacks"), the training features of each group ``k`` (a class of one population, such as
``pediatric/PNEUMONIA``, and the reference films) are summarised by their mean ``mu_k`` and
one covariance ``S`` shared by all groups, here shrunk towards a scaled identity with
the Ledoit-Wolf estimator (sklearn's :class:`~sklearn.covariance.LedoitWolf`) because a
DenseNet121 has 1024 features and a calibration set often has fewer images. The score is
the Mahalanobis distance to the nearest group mean::

    score(f) = min_k sqrt((f - mu_k)^T S^-1 (f - mu_k))

An image whose score is above :attr:`OODStats.threshold` (by default the 99th percentile of
a validation split's scores, so that about 1% of in-distribution images are refused) does
not look like anything the model was trained on: a CT slice, an MR image, a photograph, a
scanned document. The score costs two small matrix products per batch, in torch, on the
device of the features (``benchmarks/bench_ood.py`` measures it against the forward pass).

The statistics are stored in checkpoint metadata under :data:`METADATA_KEY` as tensors and
plain numbers, so that the checkpoint still loads with ``torch.load(weights_only=True)``.

Example:
    >>> clf = Classifier("bundled")                                          # doctest: +SKIP
    >>> train = collect_features(clf, train_paths)                           # doctest: +SKIP
    >>> val = collect_features(clf, val_paths)                               # doctest: +SKIP
    >>> stats = fit_ood(train.features, labels[train.kept], val.features)   # doctest: +SKIP
    >>> stats.refuses(clf.forward(batch).features)                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sklearn.covariance import LedoitWolf

from medcam.errors import CheckpointError, MedcamError
from medcam.gate.metadata import update_checkpoint
from medcam.io import load_image
from medcam.models.checkpoint import Checkpoint, load_checkpoint
from medcam.models.predictor import Classifier
from medcam.models.preprocess import prepare

__all__ = ["METADATA_KEY", "FeatureSet", "OODStats", "collect_features", "fit_ood", "read_ood",
           "write_ood"]

METADATA_KEY = "ood"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class OODStats:
    """Class means, shared shrunk precision matrix and refusal threshold of the image gate.

    Attributes:
        means: ``(K, C)`` float32 group means of the training features.
        precision: ``(C, C)`` float32 inverse of the shared Ledoit-Wolf covariance.
        threshold: scores above it are refused.
        quantile: the validation quantile the threshold was set at.
        shrinkage: the Ledoit-Wolf shrinkage coefficient (0: sample covariance, 1: identity).
        n_train: training images the means and covariance came from.
        n_val: validation images the threshold came from.
        groups: the name of each mean (``population/class``, ``reference``), or empty when
            the statistics predate names.
    """

    means: torch.Tensor
    precision: torch.Tensor
    threshold: float
    quantile: float = 0.99
    shrinkage: float = 0.0
    n_train: int = 0
    n_val: int = 0
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.means.ndim != 2 or self.precision.shape != (self.means.shape[1],) * 2:
            raise ValueError(
                f"means must be (K, C) and precision (C, C), got {tuple(self.means.shape)} and "
                f"{tuple(self.precision.shape)}"
            )
        if self.groups and len(self.groups) != self.means.shape[0]:
            raise ValueError(f"{len(self.groups)} group names for {self.means.shape[0]} means")

    @property
    def feature_dim(self) -> int:
        """``C``, the number of features the statistics expect."""
        return int(self.means.shape[1])

    def to(self, device: str | torch.device) -> OODStats:
        """The same statistics with their tensors on ``device`` (for scoring on a GPU)."""
        return dataclasses.replace(self, means=self.means.to(device), precision=self.precision.to(device))

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance ``(B,)`` of features ``(B, C)`` to the nearest group mean.

        Computed in float32 on the features' device, for the whole batch and every class at
        once; the statistics are moved there when they are elsewhere (use :meth:`to` once to
        avoid the copy on every call).

        Raises:
            ValueError: ``features`` is not ``(B, C)`` with this model's ``C``.
        """
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"features must have shape (B, {self.feature_dim}), got {tuple(features.shape)}"
            )
        f = features.float()
        means = self.means.to(f.device)
        precision = self.precision.to(f.device)
        diff = f[:, None, :] - means[None]                          # (B, K, C)
        squared = ((diff @ precision) * diff).sum(-1)               # (B, K)
        return squared.min(dim=1).values.clamp_min(0).sqrt()

    def refuses(self, features: torch.Tensor) -> torch.Tensor:
        """Boolean ``(B,)``: the score is above the threshold."""
        return self.score(features) > self.threshold

    def reason(self, score: float) -> str:
        """The sentence a refusal reports, for a score above the threshold."""
        return (
            f"the image does not resemble the chest radiographs this model was trained on "
            f"(out-of-distribution score {score:.1f} > {self.threshold:.1f})"
        )

    def to_metadata(self) -> dict[str, Any]:
        """Tensors and plain numbers for checkpoint metadata (``weights_only=True`` loadable)."""
        return {
            "version": _VERSION,
            "method": "mahalanobis-ledoit-wolf",
            "means": self.means.detach().float().cpu().clone(),
            "precision": self.precision.detach().float().cpu().clone(),
            "threshold": float(self.threshold),
            "quantile": float(self.quantile),
            "shrinkage": float(self.shrinkage),
            "n_train": int(self.n_train),
            "n_val": int(self.n_val),
            "groups": list(self.groups),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> OODStats:
        """Read back what :meth:`to_metadata` wrote.

        Raises:
            CheckpointError: an entry is missing, of a newer version, or malformed.
        """
        try:
            if int(meta.get("version", 0)) > _VERSION:
                raise CheckpointError(
                    f"out-of-distribution statistics version {meta['version']} is newer than "
                    f"this medcam reads ({_VERSION}); upgrade medcam-screening"
                )
            return cls(
                means=torch.as_tensor(meta["means"], dtype=torch.float32),
                precision=torch.as_tensor(meta["precision"], dtype=torch.float32),
                threshold=float(meta["threshold"]),
                quantile=float(meta.get("quantile", 0.99)),
                shrinkage=float(meta.get("shrinkage", 0.0)),
                n_train=int(meta.get("n_train", 0)),
                n_val=int(meta.get("n_val", 0)),
                groups=tuple(str(g) for g in meta.get("groups", ())),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"the checkpoint's {METADATA_KEY!r} metadata is malformed ({err})") from err


def fit_ood(
    features_train: torch.Tensor,
    labels_train: torch.Tensor | Sequence[int],
    features_val: torch.Tensor,
    *,
    quantile: float = 0.99,
    groups_val: Sequence[str] | None = None,
) -> OODStats:
    """Fit group means and a Ledoit-Wolf shared covariance, and set the threshold on validation.

    The threshold is the ``quantile`` of the validation images' scores, not of the training
    images': the training images were used to fit the statistics and score lower than new
    images of the same kind would.

    Args:
        features_train: ``(N, C)`` pooled features of the training images.
        labels_train: ``(N,)`` group index of each training image (its class, or its
            population and class).
        features_val: ``(M, C)`` pooled features of validation images (other patients).
        quantile: the share of validation images that the threshold lets through.
        groups_val: the population of each validation image; then the threshold lets
            through at least ``quantile`` of every population (the highest of their quantiles),
            so that a small population is not refused for differing from a large one.

    Raises:
        ValueError: shapes disagree, a class has fewer than two images, or ``quantile`` is
            not in (0, 1].
    """
    x = torch.as_tensor(features_train).detach().double().cpu()
    labels = torch.as_tensor(labels_train).long().cpu()
    val = torch.as_tensor(features_val).detach().float().cpu()
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(
            f"features_train must be (N, C) and labels_train (N,), got {tuple(x.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if val.ndim != 2 or val.shape[1] != x.shape[1] or val.shape[0] == 0:
        raise ValueError(f"features_val must be (M, {x.shape[1]}) with M >= 1, got {tuple(val.shape)}")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if labels.min() < 0:
        raise ValueError(f"labels_train must be class indices >= 0, got {int(labels.min())}")
    counts = torch.bincount(labels)
    if (counts < 2).any():
        raise ValueError(
            f"every class needs at least two training images; counts per class: {counts.tolist()}"
        )
    one_hot = torch.nn.functional.one_hot(labels, len(counts)).double()
    means = (one_hot.T @ x) / counts[:, None].double()
    residuals = (x - means[labels]).numpy()
    estimator = LedoitWolf(assume_centered=True).fit(residuals)
    precision = torch.from_numpy(estimator.precision_).float()
    stats = OODStats(means=means.float(), precision=(precision + precision.T) / 2, threshold=0.0,
                     quantile=quantile, shrinkage=float(estimator.shrinkage_),
                     n_train=int(x.shape[0]), n_val=int(val.shape[0]))
    scores = stats.score(val)
    if groups_val is None:
        threshold = float(torch.quantile(scores, quantile))
    else:
        if len(groups_val) != len(scores):
            raise ValueError(f"groups_val has {len(groups_val)} entries for {len(scores)} validation images")
        names = list(groups_val)
        threshold = max(float(torch.quantile(scores[[n == g for n in names]], quantile)) for g in set(names))
    return dataclasses.replace(stats, threshold=threshold)


def read_ood(checkpoint: Checkpoint) -> OODStats | None:
    """The image-gate statistics stored in a checkpoint, or None when it has none.

    Raises:
        CheckpointError: the stored statistics are malformed or do not fit the network.
    """
    meta = checkpoint.metadata.get(METADATA_KEY)
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{checkpoint.path}: {METADATA_KEY!r} metadata is not a mapping")
    stats = OODStats.from_metadata(meta)
    _check_fits(checkpoint, stats)
    return stats


def _check_fits(checkpoint: Checkpoint, stats: OODStats) -> None:
    """The statistics were fitted on features of this network's size."""
    heads = [m for m in checkpoint.network.modules() if isinstance(m, torch.nn.Linear)]
    if heads and heads[-1].in_features != stats.feature_dim:
        raise CheckpointError(
            f"{checkpoint.path}: the network has {heads[-1].in_features} features but the "
            f"out-of-distribution statistics {stats.feature_dim}; fit them with this model"
        )


def write_ood(path: str | Path, stats: OODStats, *, out: str | Path | None = None) -> str:
    """Store ``stats`` in the checkpoint at ``path`` (or a copy at ``out``); returns the new model id.

    Raises:
        CheckpointError: as :func:`~medcam.gate.metadata.update_checkpoint`, or the
            statistics do not fit the network's feature size.
    """
    _check_fits(load_checkpoint(path), stats)
    return update_checkpoint(path, {METADATA_KEY: stats.to_metadata()}, out=out)


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Pooled features and logits of a list of files, and which files could not be read.

    Attributes:
        features: ``(len(kept), C)`` float32, on the CPU.
        kept: the index in the input list of each row of :attr:`features`.
        failures: ``(path, reason)`` of every file that was refused; the others go on.
        logits: ``(len(kept), K)`` float32 logits of the same forward pass, on the CPU (what
            :func:`~medcam.training.train.recalibrate` fits the calibration on); None when not collected.
    """

    features: torch.Tensor
    kept: tuple[int, ...]
    failures: tuple[tuple[str, str], ...] = ()
    logits: torch.Tensor | None = None


def collect_features(classifier: Classifier, paths: Sequence[str | Path], *,
                     batch_size: int = 16) -> FeatureSet:
    """Pooled features and logits of ``paths``, read and prepared as for scoring, ``batch_size`` at a time.

    For fitting :func:`fit_ood` (training or a ``fit-ood`` command) and the calibration
    (:func:`~medcam.training.train.recalibrate`): a file that cannot be read becomes a row of
    :attr:`FeatureSet.failures` with its reason, and is left out of :attr:`FeatureSet.kept`.

    Raises:
        ValueError: ``batch_size`` is below 1.
        TypeError: the classifier's method gives no features (not a single-pass CAM).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    config = classifier.checkpoint.preprocess
    chunks: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    kept: list[int] = []
    failures: list[tuple[str, str]] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        output = classifier.forward(torch.stack(pending))
        if output.features is None:
            raise TypeError(f"{type(classifier.cam).__name__} gives no pooled features")
        chunks.append(output.features.float().cpu())
        logits.append(output.logits.float().cpu())
        pending.clear()

    for index, path in enumerate(paths):
        try:
            x, _ = prepare(load_image(path), config)
        except MedcamError as err:
            failures.append((str(path), str(getattr(err, "reason", err))))
            continue
        pending.append(x)
        kept.append(index)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    dim = chunks[0].shape[1] if chunks else 0
    features = torch.cat(chunks) if chunks else torch.empty(0, dim)
    scores = torch.cat(logits) if logits else torch.empty(0, len(classifier.classes))
    return FeatureSet(features=features, kept=tuple(kept), failures=tuple(failures), logits=scores)
