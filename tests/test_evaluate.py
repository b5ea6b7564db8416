"""Sequence-level accuracy, report rows and the fold summary (hand-computed values)."""
import numpy as np
import pytest

from fer_jax import evaluate


def _pad(rows):
  t = max(len(r) for r in rows)
  tags = np.zeros((len(rows), t), np.int32)
  mask = np.zeros((len(rows), t), bool)
  for i, r in enumerate(rows):
    tags[i, :len(r)], mask[i, :len(r)] = r, True
  return tags, mask


def test_sequence_labels_by_hand():
  tags, mask = _pad([[0, 0, 3, 3, 3], [0, 2, 2, 5, 5, 0], [0, 0], [1, 4, 4, 1]])
  last, majority = evaluate.sequence_labels(tags, mask, neutral=0)
  np.testing.assert_array_equal(last, [3, 0, 0, 1])
  # Row 1: 2 and 5 tie (two frames each): 5 is seen later. Row 2: all neutral -> neutral.
  # Row 3: 1 and 4 tie: the last frame's 1 is seen later.
  np.testing.assert_array_equal(majority, [3, 5, 0, 1])
  # No neutral class (FERA): every label votes.
  _, majority = evaluate.sequence_labels(*_pad([[0, 0, 0, 2]]), neutral=None)
  np.testing.assert_array_equal(majority, [0])


def test_sequence_metrics_and_row_by_hand():
  true, mask = _pad([[0, 0, 3, 3], [0, 2, 2, 0], [0, 5, 5], [0, 1, 1, 1, 1]])
  pred, _ = _pad([[0, 3, 3, 0], [0, 2, 4, 0], [0, 0, 0], [4, 4, 1, 1, 1]])
  m = evaluate.sequence_metrics(pred, true, mask, neutral=0)
  # last: [0 vs 3 no, 0 vs 0 yes, 0 vs 5 no, 1 vs 1 yes]; majority: [3 yes, 4 (tie, later) vs 2 no,
  # 0 vs 5 no, 1 vs 1 yes].
  assert m == {"last": 0.5, "majority": 0.5, "num_sequences": 4}
  row = evaluate.row_metrics(pred, true, mask, neutral=0)
  correct = 2 + 3 + 1 + 3  # Frames right per sequence.
  assert row["frame_accuracy"] == pytest.approx(correct / 16)
  assert row["num_frames"] == 16 and row["num_sequences"] == 4
  assert row["sequence_accuracy_last"] == 0.5 and row["sequence_accuracy_majority"] == 0.5
  with pytest.raises(ValueError, match="same"):
    evaluate.sequence_metrics(pred[:2], true, mask, neutral=0)


def test_summarize_uses_the_sample_std():
  s = evaluate.summarize([0.5, 0.7, 0.9])
  assert s["mean"] == pytest.approx(0.7) and s["n"] == 3
  assert s["std"] == pytest.approx(0.2)  # sqrt(((0.2)^2 + 0 + (0.2)^2) / (3 - 1)).
  assert evaluate.summarize([0.4])["std"] is None
