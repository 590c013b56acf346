"""Everything that makes a model, in one place (STYLE.md item 16).

- :mod:`~medcam.training.data`: labelled image lists, patient-disjoint splits, de-duplication;
- :mod:`~medcam.training.train`: ``medcam train`` (classifier) and ``medcam recalibrate``;
- :mod:`~medcam.training.calibration`: fitting the calibration map and operating threshold, ECE;
- :mod:`~medcam.training.evaluate` and :mod:`~medcam.training.localisation`: ``medcam evaluate``;
- :mod:`~medcam.training.modelcard`: ``medcam model-card``;
- :mod:`~medcam.training.lungs` and :mod:`~medcam.training.lung_gate`: the lung segmenter and
  the lung-evidence threshold and view check fitted for a classifier.

What serves a model lives in :mod:`medcam.models` and :mod:`medcam.gate`; nothing there imports
from here.
"""
