"""Networks, single-pass CAMs, gradient-based CAMs, checkpoints and the classifier."""

from medcam.models.cam import CAMOutput, SinglePassCAM, convert_to_cam, find_gap_layer
from medcam.models.checkpoint import BUNDLED_MODEL, Checkpoint, load_checkpoint, save_checkpoint
from medcam.models.grid import GridTransform, maps_to_source, normalise_maps
from medcam.models.networks import build_network
from medcam.models.predictor import Classifier, Prediction, prepare

__all__ = [
    "BUNDLED_MODEL", "CAMOutput", "Checkpoint", "Classifier", "GridTransform", "Prediction",
    "SinglePassCAM", "build_network", "convert_to_cam", "find_gap_layer", "load_checkpoint",
    "maps_to_source", "normalise_maps", "prepare", "save_checkpoint",
]
