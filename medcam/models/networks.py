"""MONAI classifiers by name, as listed in :data:`medcam.config.ARCHITECTURES`."""

from __future__ import annotations

from monai.networks import nets
from torch import nn

from medcam.config import ModelConfig

__all__ = ["build_network"]


def build_network(config: ModelConfig) -> nn.Module:
    """A freshly initialised MONAI network for ``config`` (no pretrained weights)."""
    dims, channels, k = config.spatial_dims, config.in_channels, len(config.classes)
    name = config.architecture
    if name == "densenet121":
        network = nets.DenseNet121(spatial_dims=dims, in_channels=channels, out_channels=k)
        if config.output_stride == 16:
            _dilate_last_block(network)
        return network
    if name in ("resnet18", "resnet50"):
        factory = nets.resnet18 if name == "resnet18" else nets.resnet50
        return factory(spatial_dims=dims, n_input_channels=channels, num_classes=k)
    if name == "seresnet50":
        return nets.SEResNet50(spatial_dims=dims, in_channels=channels, num_classes=k)
    if name == "efficientnet-b0":
        return nets.EfficientNetBN(name, pretrained=False, spatial_dims=dims,
                                   in_channels=channels, num_classes=k)
    raise ValueError(f"unknown architecture {name!r}")  # ModelConfig has validated it


def _dilate_last_block(network: nn.Module) -> None:
    """Output stride 32 -> 16: no pooling before the last dense block, its 3x3 convolutions dilated by 2.

    Each dilated convolution then samples the same neighbourhood of the image as before, on the
    grid of the block's input instead of one pooled by 2 (the "atrous" trick of DeepLab), so the
    weights keep their meaning; MONAI's DenseNet names the layers ``features.transition3`` and
    ``features.denseblock4``.
    """
    features = network.get_submodule("features")
    features.get_submodule("transition3").pool = nn.Identity()
    for conv in features.get_submodule("denseblock4").modules():
        if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and max(conv.kernel_size) > 1:
            conv.dilation = tuple(2 for _ in conv.kernel_size)
            conv.padding = tuple(2 * (k // 2) for k in conv.kernel_size)
