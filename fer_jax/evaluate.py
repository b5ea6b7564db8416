"""Frame metrics (accuracy, per-class accuracy, confusion), sequence accuracy, aggregation over folds."""
from typing import Optional, Sequence

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


def sequence_labels(tags, mask, neutral: Optional[int]):
  """Per-sequence labels from per-frame ones.

  Args:
    tags: int [N, T] per-frame labels (predicted or true).
    mask: bool [N, T], each row a prefix of True.
    neutral: the neutral class index, or None when the label space has none.

  Returns:
    (last int [N]: the label of each sequence's last frame (CK+'s apex),
     majority int [N]: the most frequent non-neutral label; ties go to the class seen latest in the
     sequence; `neutral` when every frame is neutral).
  """
  tags, mask = np.asarray(tags), np.asarray(mask, bool)
  lengths = mask.sum(1)
  if (lengths == 0).any():
    raise ValueError("sequence_labels: a sequence has no frames (mask row all False).")
  last = tags[np.arange(len(tags)), lengths - 1]
  majority = np.empty(len(tags), np.int64)
  for i, length in enumerate(lengths):
    row = tags[i, :length]
    votes = row if neutral is None else row[row != neutral]
    if votes.size == 0:
      majority[i] = neutral
      continue
    classes, counts = np.unique(votes, return_counts=True)
    tied = classes[counts == counts.max()]
    majority[i] = votes[np.flatnonzero(np.isin(votes, tied))[-1]]
  return last, majority


def sequence_metrics(predicted, true, mask, neutral: Optional[int]) -> dict:
  """Sequence-level accuracy of per-frame predictions.

  Args:
    predicted, true: int [N, T] per-frame labels; mask: bool [N, T]; neutral: see sequence_labels.

  Returns:
    {"last": fraction of sequences whose last frame's predicted label is its true label,
     "majority": fraction whose majority non-neutral predicted label is the sequence's emotion
     (its majority non-neutral true label), "num_sequences": N}.
  """
  if np.shape(predicted) != np.shape(true) or np.shape(true) != np.shape(mask):
    raise ValueError(f"predicted {np.shape(predicted)}, true {np.shape(true)} and mask "
                     f"{np.shape(mask)} must be the same [N, T].")
  if len(true) == 0:
    raise ValueError("No sequences to evaluate: the test split is empty.")
  p_last, p_major = sequence_labels(predicted, mask, neutral)
  t_last, t_major = sequence_labels(true, mask, neutral)
  return {"last": float(np.mean(p_last == t_last)), "majority": float(np.mean(p_major == t_major)),
          "num_sequences": int(len(true))}


def row_metrics(predicted, true, mask, neutral: Optional[int]) -> dict:
  """One report row of a method's per-frame test predictions [N, T] (true labels [N, T], mask).

  Returns:
    {"frame_accuracy", "sequence_accuracy_last", "sequence_accuracy_majority", "num_frames",
     "num_sequences"}.
  """
  mask = np.asarray(mask, bool)
  frame = masked_frames(predicted, mask) == masked_frames(true, mask)
  seq = sequence_metrics(predicted, true, mask, neutral)
  return {"frame_accuracy": float(frame.mean()), "sequence_accuracy_last": seq["last"],
          "sequence_accuracy_majority": seq["majority"], "num_frames": int(frame.size),
          "num_sequences": seq["num_sequences"]}


def summarize(values: Sequence[float]) -> dict:
  """Mean and sample standard deviation (ddof=1; None for one value) over folds, as fractions."""
  values = np.asarray(values, np.float64)
  std = float(values.std(ddof=1)) if values.size > 1 else None
  return {"mean": float(values.mean()), "std": std, "n": int(values.size)}
