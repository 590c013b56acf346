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
        return nets.DenseNet121(spatial_dims=dims, in_channels=channels, out_channels=k)
    if name in ("resnet18", "resnet50"):
        factory = nets.resnet18 if name == "resnet18" else nets.resnet50
        return factory(spatial_dims=dims, n_input_channels=channels, num_classes=k)
    if name == "seresnet50":
        return nets.SEResNet50(spatial_dims=dims, in_channels=channels, num_classes=k)
    if name == "efficientnet-b0":
        return nets.EfficientNetBN(name, pretrained=False, spatial_dims=dims,
                                   in_channels=channels, num_classes=k)
    raise ValueError(f"unknown architecture {name!r}")  # ModelConfig has validated it
