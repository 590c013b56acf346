"""Writing results: overlays, maps, masks and region annotations, with safe file names."""

from medcam.export.cams import write_cams
from medcam.export.formats import FORMATS, ExportFormat, ExportResult, export_regions, parse_formats
from medcam.export.naming import safe_name, safe_path
from medcam.export.nifti import write_nifti
from medcam.export.overlay import COLOUR_MAPS, overlay, to_uint8_gray

__all__ = ["COLOUR_MAPS", "FORMATS", "ExportFormat", "ExportResult", "export_regions", "overlay",
           "parse_formats", "safe_name", "safe_path", "to_uint8_gray", "write_cams", "write_nifti"]
