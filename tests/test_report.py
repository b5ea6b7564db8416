"""The report's one table: every row present in the results, in order, with mean ± sample std."""
import numpy as np

from fer_jax import experiment
from fer_jax import report
from configs import demo

ROWS = ("cnn", "crf/logits", "crf/geometry", "crf/logits+geometry", "joint/logits")


def _fold(k, base):
  rows = {name: {"frame_accuracy": base + 0.01 * i + 0.1 * k, "sequence_accuracy_last": 0.5,
                 "sequence_accuracy_majority": 0.25 + 0.5 * k, "num_frames": 10, "num_sequences": 2}
          for i, name in enumerate(ROWS)}
  k7 = np.eye(7, dtype=int).tolist()
  return {"fold": k, "accuracy_softmax": rows["cnn"]["frame_accuracy"],
          "accuracy_crf": rows["crf/logits"]["frame_accuracy"], "per_class_softmax": [0.5] * 7,
          "per_class_crf": [0.5] * 7, "confusion_softmax": k7, "confusion_crf": k7, "sigma2": 1.0,
          "crf_variant": "in_sample/validation", "crf_features": "logits", "rows": rows,
          "variants": {"in_sample/validation": {"accuracy_crf": 0.5}},
          "sizes": {"test_frames": 10}, "seconds": {"cnn": 10.0 + k, "crf/logits": 2.0}}


def test_table_rows_order_and_sample_std():
  config = demo.get_config()
  out = experiment.summarize([_fold(0, 0.5), _fold(1, 0.5)], config, "ck_plus", "p", ["c"] * 7)
  assert set(out["summary"]["rows"]) == set(ROWS)
  majority = out["summary"]["rows"]["crf/geometry"]["sequence_accuracy_majority"]
  assert majority["mean"] == 0.5 and np.isclose(majority["std"], np.sqrt(2 * 0.25 ** 2))
  text = report.markdown(out)
  lines = [l for l in text.splitlines() if l.startswith("| ") and "%" not in l and "---" not in l]
  names = [l.split(" | ")[0][2:] for l in lines[:5]]
  assert names == ["CNN (softmax, no CRF)", "CNN + CRF (the paper's method)", "geometry + CRF",
                   "fused + CRF", "joint CNN + CRF"]
  # CK+ frame accuracy of the paper beside CNN and CNN + CRF; fold means and ddof=1 std.
  assert "| CNN (softmax, no CRF) | 55.00 ± 7.07 | 50.00 ± 0.00 | 50.00 ± 35.36 | 85.77 |" in text
  assert "| CNN + CRF (the paper's method) | 56.00 ± 7.07 |" in text and "93.04 |" in text
  assert "ddof = 1" in text
  # A row missing from one fold is left out of the summary (and the table).
  partial = _fold(1, 0.5)
  del partial["rows"]["joint/logits"]
  out = experiment.summarize([_fold(0, 0.5), partial], config, "ck_plus", "p", ["c"] * 7)
  assert "joint/logits" not in out["summary"]["rows"] and "joint" not in report.markdown(out)


def test_stage_times_are_reported():
  out = experiment.summarize([_fold(0, 0.5), _fold(1, 0.5)], demo.get_config(), "ck_plus", "p",
                             ["c"] * 7)
  assert "cnn 10, crf/logits 2." in report.markdown(out)  # Means of 10, 11 and of 2, 2 (rounded).
