"""Writing results: overlays, maps and masks, with safe file names."""

from medcam.export.naming import safe_name, safe_path
from medcam.export.nifti import write_nifti
from medcam.export.overlay import COLOUR_MAPS, overlay, to_uint8_gray

__all__ = ["COLOUR_MAPS", "overlay", "safe_name", "safe_path", "to_uint8_gray", "write_nifti"]
