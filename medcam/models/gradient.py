"""Grad-CAM, Grad-CAM++ and occlusion sensitivity, through :mod:`monai.visualize`.

For networks whose head is not ``global average pooling -> linear`` (an MLP head, max
pooling, a flattened feature grid), :func:`~medcam.models.cam.convert_to_cam` refuses, and
these methods explain the network instead. They return the same
:class:`~medcam.models.cam.CAMOutput` as the single-pass CAM: logits ``(B, K)`` and raw maps
``(B, K, *spatial)`` for every class, which :mod:`medcam.models.grid` brings onto the source
pixels and normalises. They cost more than one forward pass:

- :class:`GradCAM` and :class:`GradCAMpp`: one forward and one backward pass per class
  (MONAI's ``compute_map`` explains one class per call), maps on the target layer's grid;
- :class:`OcclusionCAM`: one forward pass per occluded window per image, maps on the input
  grid.

Each wrapper works on its own deep copy of the network, taken when it is built: MONAI's
Grad-CAM registers forward and backward hooks it never removes and turns in-place
activations off, so the caller's network, which may be serving other requests, is never
touched. Later changes to the caller's network (training, ``load_state_dict``) are not seen;
build a new wrapper. The copy is one more set of weights in memory.

Example:
    >>> import torch
    >>> from monai.networks.nets import DenseNet121
    >>> net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    >>> grad_cam = GradCAM(net, target_layer="class_layers.relu")
    >>> out = grad_cam(torch.rand(2, 1, 64, 64))
    >>> tuple(out.logits.shape), tuple(out.maps.shape)
    ((2, 2), (2, 2, 2, 2))
"""

from __future__ import annotations

import copy
import difflib
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from monai.visualize import OcclusionSensitivity
from monai.visualize import class_activation_maps as monai_cams
from torch import nn

from medcam.errors import UnsupportedModelError
from medcam.models.cam import CAMMethod, CAMOutput

__all__ = ["GradCAM", "GradCAMpp", "OcclusionCAM"]

OCCLUSION_MODES = ("gaussian", "mean_patch", "mean_img")


class _Hooks(monai_cams.ModelWithHooks):
    """MONAI's hook wrapper, keeping the last logits and scoring each image on its own.

    MONAI squeezes the class score to shape ``(B,)``; Grad-CAM++ multiplies it with the
    gradients ``(B, C, *S)``, which broadcasts it along the last spatial axis instead of the
    batch (an error when ``B`` differs from that axis, silently wrong when it equals it). A
    score of shape ``(B, 1, ..., 1)`` broadcasts per image; its sum, which MONAI
    backpropagates, is the same.
    """

    def __init__(self, network: nn.Module, target_layer: str) -> None:
        super().__init__(network, target_layer, register_forward=True, register_backward=True)
        self.logits: torch.Tensor | None = None

    def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
        layer = self.target_layers[0]
        features = self.activations[layer]
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} must return logits of shape (batch, classes), "
                f"got {_describe(logits)}."
            )
        if not isinstance(features, torch.Tensor) or features.ndim < 3:
            raise UnsupportedModelError(
                f"target_layer {layer!r} must output a feature map (batch, channels, *spatial), "
                f"got {_describe(features)}; choose a convolutional layer."
            )
        self.logits = logits.detach()
        return logits[:, class_idx].reshape(-1, *[1] * (features.ndim - 1))

    def clear(self) -> None:
        """Drop the tensors of the last call, so that none outlives it."""
        self.activations.clear()
        self.gradients.clear()
        self.score = None
        self.logits = None


class _GradientCAM(CAMMethod):
    """Shared driver: every class through MONAI's ``compute_map``, one pass each."""

    _monai_method: ClassVar[type[monai_cams.GradCAM]]

    def __init__(self, network: nn.Module, target_layer: str) -> None:
        _check_network(network)
        _check_target_layer(network, target_layer)
        self.target_layer = target_layer
        self._network = _private_copy(network)
        for module in self._network.modules():
            # A full backward hook fails if a later layer overwrites the hooked output in
            # place; out-of-place activations give the same values.
            if vars(module).get("inplace") is True:
                vars(module)["inplace"] = False
        self._hooks = _Hooks(self._network, target_layer)
        # MONAI's hint says Module, but it takes a ModelWithHooks as is.
        self._method = self._monai_method(
            nn_module=self._hooks, target_layers=target_layer  # type: ignore[arg-type]
        )
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> CAMOutput:
        """Logits ``(B, K)`` and raw maps ``(B, K, *target_layer_grid)`` for ``x``.

        Costs K forward and K backward passes. Works under :func:`torch.inference_mode`
        (gradients are switched back on for the private copy); calls are serialised.
        """
        _check_input(x)
        with self._lock, torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            try:
                maps = [self._class_map(x, 0)]
                logits = self._hooks.logits
                assert logits is not None  # set by the pass above
                maps += [self._class_map(x, k) for k in range(1, logits.shape[1])]
            finally:
                self._hooks.clear()
        return CAMOutput(logits=logits, maps=torch.cat(maps, dim=1))

    def _class_map(self, x: torch.Tensor, class_idx: int) -> torch.Tensor:
        layer = self.target_layer
        try:
            return self._method.compute_map(x, class_idx=class_idx).detach()
        except KeyError as err:
            if layer in self._hooks.activations:
                raise
            raise UnsupportedModelError(
                f"target_layer {layer!r} did not run in the forward pass of "
                f"{type(self._network).__name__}; choose a layer the input goes through."
            ) from err
        except IndexError as err:
            if layer in self._hooks.gradients:
                raise
            raise UnsupportedModelError(
                f"no gradient reached target_layer {layer!r}: the logits do not depend on its "
                "output; choose a layer before the head."
            ) from err


class GradCAM(_GradientCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391) via MONAI.

    For class ``k`` and target-layer features ``A`` (channels ``c``, positions ``p``)::

        alpha_kc = mean_p d logit_k / d A_c(p)
        map_k(p) = ReLU(sum_c alpha_kc A_c(p))

    On a GAP -> linear head with ``A`` the pooled features, ``alpha_kc = w_kc / P`` (``P``
    positions), so ``map_k = ReLU(cam_k - b_k) / P``: the single-pass CAM without its bias,
    clipped and scaled.

    Args:
        network: a classifier returning logits ``(B, K)``; it is copied, never modified.
        target_layer: name of the layer whose output is explained (as in
            ``network.named_modules()``), usually the last convolutional block, e.g.
            ``"class_layers.relu"`` for MONAI ``DenseNet121`` or ``"layer4"`` for ``ResNet``.

    Raises:
        TypeError: ``network`` is not a module or ``target_layer`` not a string.
        ValueError: ``target_layer`` is not a layer of ``network``.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
        >>> out = GradCAM(net, "layer4")(torch.rand(1, 1, 64, 64))
        >>> tuple(out.maps.shape)
        (1, 3, 4, 4)
    """

    _monai_method = monai_cams.GradCAM


class GradCAMpp(_GradientCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, https://arxiv.org/abs/1710.11063) via MONAI.

    Weights each gradient position by ``alpha = g^2 / (2 g^2 + sum_p A g^3)`` before
    summing, and then as :class:`GradCAM`. As in MONAI, the positive gradients are scaled by
    ``exp(logit_k)``, so the raw map of each image is scaled by ``exp`` of its logit: compare
    maps after :func:`~medcam.models.grid.normalise_maps`, not raw. Unlike MONAI's own
    ``GradCAMpp``, each image of a batch gets its own score (see ``_Hooks``).

    Args and raises as for :class:`GradCAM`.
    """

    _monai_method = monai_cams.GradCAMpp


class OcclusionCAM(CAMMethod):
    """Occlusion sensitivity (Zeiler and Fergus, ECCV 2014) via MONAI, as evidence maps.

    MONAI's ``OcclusionSensitivity`` slides an occluding window over the image and records,
    at each pixel, the network's output with the windows covering it occluded (a weighted
    mean over those windows). This wrapper asks for raw logits (no softmax) and returns

        map_k(p) = logit_k(x) - logit_k(x with the region around p occluded)

    so that, as for the other methods, higher means more important: a positive value is
    evidence FOR class ``k`` (hiding it lowers the logit), a negative value evidence
    against it. Maps are on the input grid, ``(B, K, *x.shape[2:])``.

    Args:
        network: a classifier returning logits ``(B, K)``; it is copied, never modified.
        mask_size: side of the occluding window, in input pixels, one number or one per axis.
        n_batch: occluded copies of an image per forward pass (memory against speed).
        overlap: overlap between neighbouring windows, in ``[0, 1)``; the number of forward
            passes grows as ``1 / (1 - overlap) ** ndim``.
        mode: what replaces the occluded region: ``"gaussian"`` (multiplied by one minus a
            Gaussian, so pushed towards 0, the image mean after z-scoring), ``"mean_patch"``,
            ``"mean_img"``, or a number.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range, or an unknown ``mode``.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        mask_size: int | Sequence[int] = 16,
        n_batch: int = 16,
        overlap: float = 0.6,
        mode: str | float = "gaussian",
    ) -> None:
        _check_network(network)
        self.mask_size = _check_mask_size(mask_size)
        _check_int("n_batch", n_batch)
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)):
            raise TypeError(f"overlap must be a number, got {type(overlap).__name__}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
        self.mode = _check_mode(mode)
        self._network = _private_copy(network)
        self._method = OcclusionSensitivity(
            self._network,
            mask_size=self.mask_size[0] if len(self.mask_size) == 1 else list(self.mask_size),
            n_batch=n_batch, verbose=False, mode=self.mode, overlap=float(overlap), activate=False,
        )

    def __call__(self, x: torch.Tensor) -> CAMOutput:
        """Logits ``(B, K)`` and evidence maps ``(B, K, *x.shape[2:])`` for ``x``.

        Each image is occluded on its own (MONAI handles one image per call).
        """
        _check_input(x)
        spatial = tuple(x.shape[2:])
        mask = self.mask_size * len(spatial) if len(self.mask_size) == 1 else self.mask_size
        if len(mask) != len(spatial) or any(m > s for m, s in zip(mask, spatial, strict=True)):
            raise ValueError(
                f"mask_size {self.mask_size} does not fit inputs of spatial shape {spatial}: "
                "give one size per axis, none larger than the image"
            )
        with torch.no_grad():
            logits = _logits(self._network, x)
            occluded = [self._method(x[i:i + 1])[0].as_subclass(torch.Tensor)
                        for i in range(x.shape[0])]
        base = logits.reshape(*logits.shape, *[1] * len(spatial))
        return CAMOutput(logits=logits, maps=base - torch.cat(occluded))


def _private_copy(network: nn.Module) -> nn.Module:
    """A deep copy in eval mode whose weights need no gradient."""
    net = copy.deepcopy(network).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def _logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = network(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise UnsupportedModelError(
            f"{type(network).__name__} must return logits of shape (batch, classes), "
            f"got {_describe(logits)}."
        )
    return logits


def _check_network(network: object) -> None:
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")


def _check_target_layer(network: nn.Module, target_layer: object) -> None:
    if not isinstance(target_layer, str):
        raise TypeError(
            f"target_layer must be a layer name (str), got {type(target_layer).__name__}"
        )
    names = [name for name, _ in network.named_modules() if name]
    if target_layer in names:
        return
    close = difflib.get_close_matches(target_layer, names, n=3)
    hint = (f"did you mean {' or '.join(map(repr, close))}?" if close
            else f"its last layers are {', '.join(map(repr, names[-4:]))}.")
    raise ValueError(
        f"target_layer {target_layer!r} is not a layer of {type(network).__name__}; {hint}"
    )


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return value


def _check_mask_size(mask_size: object) -> tuple[int, ...]:
    sizes = tuple(mask_size) if isinstance(mask_size, Sequence) else (mask_size,)
    if not sizes:
        raise ValueError("mask_size must give at least one size, got an empty sequence")
    return tuple(_check_int("mask_size", s) for s in sizes)


def _check_mode(mode: object) -> str | float:
    if isinstance(mode, str):
        if mode in OCCLUSION_MODES:
            return mode
        close = difflib.get_close_matches(mode, OCCLUSION_MODES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"mode must be one of {', '.join(map(repr, OCCLUSION_MODES))} or a number, "
            f"got {mode!r}{hint}"
        )
    if isinstance(mode, bool) or not isinstance(mode, (int, float)):
        raise TypeError(f"mode must be a string or a number, got {type(mode).__name__}")
    return float(mode)  # MONAI takes a fill value only as a float


def _check_input(x: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 3 or not x.is_floating_point():
        raise ValueError(
            f"x must be a floating-point batch (batch, channels, *spatial), got a "
            f"{x.dtype} tensor of shape {tuple(x.shape)}"
        )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
