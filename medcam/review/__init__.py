"""The radiologist's reviewer, without its user interface (``apps/reviewer.py``).

- :mod:`~medcam.review.store`: the SQLite review database (reviews, region decisions,
  audit trail, score cache), versioned and safe for concurrent sessions;
- :mod:`~medcam.review.worklist`: images from a folder and uploads, scored, triaged, filtered;
- :mod:`~medcam.review.display`: window presets, zoom, CAM overlay and region outlines;
- :mod:`~medcam.review.export`: accepted regions through :func:`medcam.export.export_regions`;
- :mod:`~medcam.review.launcher`: ``medcam review``'s Streamlit command and the app's configuration;
- :mod:`~medcam.review.monitoring`: the Monitoring page's rows (the cached scores) through
  :mod:`medcam.monitor` (imported on its own: it needs matplotlib).
"""

from medcam.review.launcher import ReviewConfig, default_db, launch, streamlit_command
from medcam.review.store import STATUSES, ImageRef, Review, ReviewStore, Status, StoreError
from medcam.review.worklist import Limits, WorkItem, Worklist, load_prediction, save_upload, select

__all__ = ["STATUSES", "ImageRef", "Limits", "Review", "ReviewConfig", "ReviewStore", "Status", "StoreError",
           "WorkItem", "Worklist", "default_db", "launch", "load_prediction", "save_upload", "select",
           "streamlit_command"]
