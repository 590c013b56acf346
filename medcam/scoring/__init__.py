"""Batch scoring (``medcam score``): folders and archives to a durable, resumable results CSV.

The data flow, one module each:

- :mod:`~medcam.scoring.discover`: the inputs, streamed from a safe walk of the folders;
- :mod:`~medcam.scoring.dataset`: decoding and preprocessing in loader workers, refusals
  turned into error records;
- :mod:`~medcam.scoring.results`: the results CSV (appended and ``fsync``-ed per batch, torn
  rows cut, done paths skipped on resume) and the per-study file rebuilt from it;
- :mod:`~medcam.scoring.local` (:func:`score`) and :mod:`~medcam.scoring.ray_engine`
  (:func:`score_ray`): the two engines, which write the same rows.

Example:
    >>> from medcam.models import Classifier
    >>> from medcam.scoring import ScoreOptions, score
    >>> summary = score(["/data/night"], Classifier("bundled"), ScoreOptions(out=Path("night.csv")))  # doctest: +SKIP
"""

from medcam.scoring.discover import Item, count_items, iter_items
from medcam.scoring.local import score
from medcam.scoring.options import ScoreOptions, ScoreSummary, cam_name, default_workers
from medcam.scoring.ray_engine import INSTALL_HINT, score_ray
from medcam.scoring.results import (
    ModelInfo,
    ResultsFile,
    make_row,
    read_results,
    results_columns,
    studies_path,
    write_studies,
)

__all__ = [
    "INSTALL_HINT", "Item", "ModelInfo", "ResultsFile", "ScoreOptions", "ScoreSummary", "cam_name",
    "count_items", "default_workers", "iter_items", "make_row", "read_results", "results_columns",
    "score", "score_ray", "studies_path", "write_studies",
]
