"""The one pipeline: inputs to a durable, resumable results CSV and the files beside each row.

``medcam score``, ``medcam predict`` and ``medcam export`` (:mod:`medcam.commands`) are this
pipeline with different outputs switched on (:class:`ScoreOptions`). The data flow, one
module each:

- :mod:`~medcam.scoring.discover`: the inputs, streamed from a safe walk of the folders;
- :mod:`~medcam.scoring.dataset`: decoding and preprocessing in loader workers, refusals
  turned into error records;
- :mod:`~medcam.scoring.outputs`: each image's files (CAM overlays and maps, region exports),
  every failure turned into that image's reason;
- :mod:`~medcam.scoring.results`: the results CSV (appended and ``fsync``-ed per batch, torn
  rows cut, done paths skipped on resume) and the per-study file rebuilt from it;
- :mod:`~medcam.scoring.local` (:func:`score`) and :mod:`~medcam.scoring.ray_engine`
  (:func:`score_ray`): the two engines, which write the same rows.

Example:
    >>> from medcam.gate import ServedModel
    >>> from medcam.scoring import ScoreOptions, score
    >>> summary = score(["/data/night"], ServedModel("bundled"), ScoreOptions(out=Path("night.csv")))  # doctest: +SKIP
"""

from medcam.scoring.discover import Item, count_items, iter_items
from medcam.scoring.local import score
from medcam.scoring.options import METHODS, ScoreOptions, ScoreSummary, default_workers, output_name
from medcam.scoring.ray_engine import INSTALL_HINT, score_ray
from medcam.scoring.results import (
    ModelInfo,
    ResultsFile,
    SkippedFile,
    label_of,
    make_row,
    read_results,
    results_columns,
    skipped_path,
    studies_path,
    write_studies,
)

__all__ = [
    "INSTALL_HINT", "METHODS", "Item", "ModelInfo", "ResultsFile", "ScoreOptions", "ScoreSummary", "SkippedFile",
    "count_items", "default_workers", "iter_items", "label_of", "make_row", "output_name", "read_results",
    "results_columns", "score", "score_ray", "skipped_path", "studies_path", "write_studies",
]
