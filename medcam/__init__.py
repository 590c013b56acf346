"""medcam: chest X-ray pneumonia screening with single-pass class activation maps.

The package reads as its data flow: :mod:`medcam.io` loads pixels with their geometry and
identity, :mod:`medcam.models` turns them into logits and class activation maps in one
forward pass, and the command line (:mod:`medcam.cli`) only orchestrates.
"""

__version__ = "0.1.0"

from medcam.errors import MedcamError, UnsupportedInputError

__all__ = ["MedcamError", "UnsupportedInputError", "__version__"]
