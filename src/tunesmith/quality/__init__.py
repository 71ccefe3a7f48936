"""Data quality beyond exact matching (`tunesmith check`, and `train` before it trains):
likely label errors, near-duplicates across splits, outliers and wrong-language rows, and
for images near-duplicate and single-colour images.

Which checks apply is the task's declaration (`quality_checks`):
  "label-errors"     single-label classes: confident learning on out-of-fold probe predictions (labels.py)
  "near-duplicates"  validation and test texts whose embedding nearly equals a training text's (neighbours.py),
                     or that repeat part of one word for word (overlap.py)
  "outliers"         texts far from every class centroid (outliers.py)
  "text"             texts empty after normalisation, rows in another script (text.py)
  "images"           near-duplicate images across splits, single-colour images (images.py)
`inspect` runs them and returns a QualityReport: counts, the top examples, and the full lists,
which `write` puts in CSV files the user can review (and that load back with pandas).
"""

from tunesmith.quality.inspection import (DYNAMICS_BETTER_BELOW_KAPPA, NEAR_THRESHOLD, RELIABLE_KAPPA, inspect,
                                         leave_out, training_suspects)
from tunesmith.quality.report import QualityReport

__all__ = ["DYNAMICS_BETTER_BELOW_KAPPA", "NEAR_THRESHOLD", "RELIABLE_KAPPA", "QualityReport", "inspect", "leave_out", "training_suspects"]
