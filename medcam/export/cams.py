"""One prediction's class activation maps as files: the overlay PNG, the raw maps, NIfTI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcam.export.naming import safe_path
from medcam.export.nifti import write_nifti
from medcam.export.overlay import overlay
from medcam.export.png import save_png
from medcam.models.grid import Normalisation, normalise_maps

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["write_cams"]


def write_cams(prediction: Prediction, folder: Path, name: str, *, cam_class: str,
               colour_map: str = "jet", opacity: float = 0.5, normalisation: Normalisation = "positive",
               nifti: bool = True) -> dict[str, str]:
    """Write one prediction's CAM files into ``folder`` and return them by kind.

    ``<name>_overlay.png``: ``cam_class``'s map, normalised, over the display image (marked as
    medcam's own, :func:`~medcam.export.png.save_png`);
    ``<name>_cam.npy``: every class's raw map ``(K, rows, cols)`` float32 on the source grid;
    with ``nifti`` and a source geometry, ``<name>_cam.nii.gz``. Names go through
    :func:`~medcam.export.safe_path`. Keys: ``overlay``, ``cam`` and ``cam_nifti``.
    """
    image = prediction.image
    index = prediction.classes.index(cam_class)
    heat = normalise_maps(prediction.maps[None, index:index + 1], normalisation)[0, 0].numpy()
    files = {}
    overlay_path = safe_path(folder, f"{name}_overlay.png")
    save_png(overlay_path, overlay(image.pixels, heat, colour_map=colour_map, opacity=opacity))
    files["overlay"] = str(overlay_path)
    maps = prediction.maps.numpy().astype(np.float32)
    npy_path = safe_path(folder, f"{name}_cam.npy")
    np.save(npy_path, maps)
    files["cam"] = str(npy_path)
    if nifti and image.affine is not None:
        nii_path = safe_path(folder, f"{name}_cam.nii.gz")
        write_nifti(nii_path, image, maps,
                    description=f"medcam CAM {','.join(prediction.classes)} {prediction.model_id}")
        files["cam_nifti"] = str(nii_path)
    return files
