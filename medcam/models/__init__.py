"""Networks, single-pass CAMs, gradient-based CAMs, checkpoints and the classifier."""

from medcam.models.cam import (
    CAMMethod,
    CAMOutput,
    SinglePassCAM,
    convert_to_cam,
    find_gap_layer,
)
from medcam.models.checkpoint import BUNDLED_MODEL, Checkpoint, load_checkpoint, save_checkpoint
from medcam.models.gradient import GradCAM, GradCAMpp, OcclusionCAM
from medcam.models.grid import GridTransform, maps_to_source, normalise_maps
from medcam.models.networks import build_network
from medcam.models.predictor import Classifier, Prediction, serving_memory_format
from medcam.models.preprocess import prepare

__all__ = [
    "BUNDLED_MODEL", "CAMMethod", "CAMOutput", "Checkpoint", "Classifier", "GradCAM", "GradCAMpp",
    "GridTransform", "OcclusionCAM", "Prediction", "SinglePassCAM", "build_network",
    "convert_to_cam", "find_gap_layer", "load_checkpoint", "maps_to_source", "normalise_maps",
    "prepare", "save_checkpoint", "serving_memory_format",
]
