"""Frame-level metrics: accuracy, per-class accuracy (recall), confusion matrix; aggregation over folds."""
from typing import Sequence

import numpy as np


def frame_metrics(predicted, true, num_classes: int) -> dict:
  """Metrics of per-frame predictions.

  Args:
    predicted: int [N] predicted labels (real frames only, no padding).
    true: int [N] true labels in [0, num_classes).
    num_classes: K.

  Returns:
    {"accuracy": float, "per_class": [K] list (NaN where a class has no frame),
     "confusion": [K, K] nested list of counts, confusion[true, predicted], "num_frames": N}.
  """
  predicted = np.asarray(predicted).reshape(-1)
  true = np.asarray(true).reshape(-1)
  if predicted.shape != true.shape:
    raise ValueError(f"predicted {predicted.shape} and true {true.shape} differ in length.")
  if true.size == 0:
    raise ValueError("No frames to evaluate: the test split is empty; check the protocol's test_fraction.")
  for name, x in (("predicted", predicted), ("true", true)):
    if x.min() < 0 or x.max() >= num_classes:
      raise ValueError(f"{name} labels must lie in [0, {num_classes}); got [{x.min()}, {x.max()}].")
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (true, predicted), 1)
  support = confusion.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
  return {
      "accuracy": float(np.trace(confusion) / confusion.sum()),
      "per_class": [float(x) for x in per_class],
      "confusion": confusion.tolist(),
      "num_frames": int(true.size),
  }


def masked_frames(tags, mask):
  """Flattens [N, T] per-sequence tags to the real frames [M] in sequence order."""
  return np.asarray(tags)[np.asarray(mask, bool)]


def summarize(values: Sequence[float]) -> dict:
  """Mean and (population) standard deviation over folds, as fractions."""
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}
