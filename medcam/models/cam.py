"""Single-pass class activation maps for networks with a global-average-pooling head.

A network whose head is ``global average pooling -> (flatten, dropout) -> linear`` computes

    logit_k = b_k + w_k . mean_p f(p)  =  mean_p (b_k + w_k . f(p))

so the per-position scores ``cam_k(p) = b_k + w_k . f(p)`` are the class activation maps of
Zhou et al. (CVPR 2016) and their spatial mean *is* the logit. :func:`convert_to_cam`
replaces the pooling layer by a reshape module that moves every spatial position into the
batch dimension, so that the unchanged flatten/linear layers score each position; one
forward pass then gives the logits and the maps of every class for a whole batch, with no
hooks and no backward pass, and it runs under :func:`torch.inference_mode`.

Example:
    >>> import torch
    >>> from monai.networks.nets import DenseNet121
    >>> net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    >>> cam = convert_to_cam(net)
    >>> with torch.inference_mode():
    ...     out = cam(torch.rand(4, 1, 224, 224))
    >>> tuple(out.logits.shape), tuple(out.maps.shape)
    ((4, 2), (4, 2, 7, 7))
"""

from __future__ import annotations

import copy
import math
import threading
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import nn

from medcam.errors import UnsupportedModelError

__all__ = ["CAMMethod", "CAMOutput", "SinglePassCAM", "convert_to_cam", "find_gap_layer"]

_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


class CAMOutput(NamedTuple):
    """Logits ``(B, K)``, raw class activation maps ``(B, K, *spatial)`` and pooled features.

    The maps are in logit units on the network's last feature grid: their spatial mean is
    the logit (for single-pass CAM). See :mod:`medcam.models.grid` to bring them onto the
    source image and normalise them.

    ``features`` ``(B, C)`` is the spatial mean of the feature map the head sees (what the
    replaced global average pooling would have output), from the same forward pass; the
    out-of-distribution score of :mod:`medcam.gate.ood` reads it. Methods that do not see
    the head's input (the gradient and occlusion methods) leave it ``None``.

    ``lungs`` ``(B, 1, s, s)`` is the lung segmenter's probability on the model grid for the
    same batch (see :mod:`medcam.models.lungs`), when the classifier serves one.
    """

    logits: torch.Tensor
    maps: torch.Tensor
    features: torch.Tensor | None = None
    lungs: torch.Tensor | None = None


class CAMMethod(ABC):
    """A way to explain a batch: ``method(x)`` returns :class:`CAMOutput` for every class.

    Implemented by :class:`SinglePassCAM` (one forward pass, GAP -> linear heads only) and by
    :class:`~medcam.models.gradient.GradCAM`, :class:`~medcam.models.gradient.GradCAMpp` and
    :class:`~medcam.models.gradient.OcclusionCAM` (any classifier, several passes).
    """

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> CAMOutput:
        """Logits ``(B, K)`` and raw maps ``(B, K, *spatial)`` for a batch ``(B, C, *spatial)``."""


class _SpatialToBatch(nn.Module):
    """Stands in for global average pooling: ``(B, C, *S) -> (B * prod(S), C, 1, ...)``.

    The output keeps the pooled tensor's rank, so whatever the network does next (a
    ``Flatten`` module, ``x.view(x.size(0), -1)``, ``torch.flatten(x, 1)``) still works and the
    linear layer scores every position. The spatial shape of the last call, and the pooled
    features ``(B, C)`` until :meth:`take_features` collects them, are kept per thread so
    that one converted model can serve several threads.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @property
    def last_spatial(self) -> tuple[int, ...]:
        spatial: tuple[int, ...] = self._local.spatial
        return spatial

    def take_features(self) -> torch.Tensor | None:
        """The pooled features of this thread's last call, handed over once (then None)."""
        features: torch.Tensor | None = getattr(self._local, "features", None)
        self._local.features = None
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        self._local.spatial = tuple(spatial)
        self._local.features = x.reshape(b, c, -1).mean(-1)
        positions = x.reshape(b, c, -1).transpose(1, 2).reshape(-1, c)
        return positions.reshape(-1, c, *([1] * len(spatial)))

    def __deepcopy__(self, memo: dict[int, object]) -> _SpatialToBatch:
        return _SpatialToBatch()


def find_gap_layer(network: nn.Module) -> str:
    """Name of the network's head pooling layer: the last registered global average pooling.

    Squeeze-and-excitation blocks pool globally too; the head is the last such layer in
    registration order (MONAI registers the head after the feature blocks), and
    :func:`convert_to_cam` verifies the choice numerically.

    Raises:
        UnsupportedModelError: if the network has no global average pooling layer.
    """
    names = [
        name
        for name, module in network.named_modules()
        if isinstance(module, _ADAPTIVE_POOLS) and _is_global(module.output_size)
    ]
    if not names:
        raise UnsupportedModelError(
            f"{type(network).__name__} cannot give single-pass CAMs: it has no global average "
            "pooling layer (AdaptiveAvgPool with output size 1). Use medcam.models.GradCAM or "
            "OcclusionCAM for this network."
        )
    return names[-1]


def _is_global(output_size: object) -> bool:
    sizes = output_size if isinstance(output_size, tuple) else (output_size,)
    return all(s == 1 for s in sizes)


class SinglePassCAM(nn.Module, CAMMethod):
    """A converted network: ``forward(x)`` returns :class:`CAMOutput` for the whole batch.

    The output also carries the pooled features ``(B, C)`` of the head's input, taken from
    the same pass at the cost of one spatial mean. Build it with :func:`convert_to_cam`. The
    converted network has the same parameters and ``state_dict`` as the original (the
    reshape module has none).
    """

    def __init__(self, network: nn.Module, gap_name: str) -> None:
        super().__init__()
        self.network = network
        self.gap_name = gap_name
        self._reshape = _SpatialToBatch()
        _set_submodule(network, gap_name, self._reshape)

    def forward(self, x: torch.Tensor) -> CAMOutput:
        try:
            scores = self.network(x)
        finally:
            features = self._reshape.take_features()
        b = x.shape[0]
        spatial = self._reshape.last_spatial
        if scores.ndim != 2 or scores.shape[0] != b * math.prod(spatial):
            raise UnsupportedModelError(
                f"the layers after {self.gap_name!r} changed the number of positions "
                f"(got scores of shape {tuple(scores.shape)} for {b} images of "
                f"{'x'.join(map(str, spatial))} positions); they must act on each position alone."
            )
        k = scores.shape[1]
        maps = scores.reshape(b, -1, k).transpose(1, 2).reshape(b, k, *spatial)
        return CAMOutput(logits=maps.flatten(2).mean(-1), maps=maps, features=features)


def convert_to_cam(
    network: nn.Module,
    *,
    inplace: bool = False,
    probe_shape: tuple[int, ...] | None = None,
    atol: float = 1e-4,
    gap_layer: str | None = None,
) -> SinglePassCAM:
    """Convert a global-average-pooling classifier into a :class:`SinglePassCAM`.

    The conversion is checked, not assumed: a probe batch of two random images goes through
    the original and the converted network, and the conversion is refused unless the logits
    agree, which holds exactly when everything after the pooling layer is affine and acts
    on each position alone (flatten, dropout in eval mode, linear).

    Args:
        network: the classifier, e.g. MONAI ``DenseNet121``, ``ResNet``, ``SEResNet50`` or
            ``EfficientNetBN``, in 2D or 3D. It is put in eval mode.
        inplace: convert ``network`` itself instead of a deep copy.
        probe_shape: spatial shape of the probe images; 64 per dimension by default.
        atol: largest accepted absolute difference between the two sets of probe logits.
        gap_layer: name of the head's pooling layer, if not the last global pooling.

    Whatever goes wrong during the check (a refusal, any other exception, an interrupt), the
    pooling layer is put back, so that an ``inplace`` conversion never leaves a half-converted
    network behind.

    Raises:
        UnsupportedModelError: the network has no GAP layer, or its head is not
            a per-position affine map (for instance an MLP with a non-linearity).
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    gap_name = gap_layer or find_gap_layer(network)
    gap = network.get_submodule(gap_name)
    if not isinstance(gap, _ADAPTIVE_POOLS):
        raise UnsupportedModelError(f"{gap_name!r} is a {type(gap).__name__}, not adaptive average pooling")
    spatial_dims = _ADAPTIVE_POOLS.index(type(gap)) + 1
    in_channels = _input_channels(network)
    shape = probe_shape or (64,) * spatial_dims
    net = network if inplace else copy.deepcopy(network)
    net.eval()
    param = next(net.parameters(), None)
    probe = torch.rand(2, in_channels, *shape, generator=torch.Generator().manual_seed(0))
    if param is not None:
        probe = probe.to(device=param.device, dtype=param.dtype)
    with torch.inference_mode():
        reference = net(probe)
    converted = SinglePassCAM(net, gap_name)
    try:
        with torch.inference_mode():
            try:
                logits = converted(probe).logits
            except RuntimeError as err:
                raise UnsupportedModelError(
                    f"{type(network).__name__}: the layers after {gap_name!r} do not accept one "
                    f"position at a time ({err})."
                ) from err
        if reference.shape != logits.shape or not torch.allclose(reference, logits, atol=atol):
            raise UnsupportedModelError(
                f"{type(network).__name__}: the head after {gap_name!r} is not a per-position "
                "affine map (flatten/dropout/linear), so its logits are not the mean of "
                "class activation maps. Use medcam.models.GradCAM for this network."
            )
    except BaseException:
        _set_submodule(net, gap_name, gap)
        raise
    return converted


def _input_channels(network: nn.Module) -> int:
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    raise UnsupportedModelError(f"{type(network).__name__} has no convolution layer.")


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
