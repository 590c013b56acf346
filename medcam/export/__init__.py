"""Writing results: overlays, maps, masks and region annotations, with safe file names."""

from medcam.export.naming import safe_name, safe_path
from medcam.export.nifti import write_nifti
from medcam.export.overlay import COLOUR_MAPS, overlay, to_uint8_gray
from medcam.export.regions import FORMATS, ExportFormat, ExportResult, export_regions, parse_formats

__all__ = ["COLOUR_MAPS", "FORMATS", "ExportFormat", "ExportResult", "export_regions", "overlay",
           "parse_formats", "safe_name", "safe_path", "to_uint8_gray", "write_nifti"]
