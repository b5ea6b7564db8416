"""The two-stage experiment end to end on the synthetic set, resume, cross-database labels, user errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import demo
from fer_jax import experiment
from fer_jax import train
from fer_jax.data import labels
from fer_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path):
  c = demo.get_config()
  with c.unlocked():
    c.data.data_dir = str(tmp_path / "tfds")
    c.data.synthetic.update(num_subjects=12, sequences_per_subject=6, min_length=10, max_length=16)
    c.protocol.update(num_folds=4, test_fraction=0.25, val_fraction=0.1, folds=(0,))
    c.train.update(num_steps=300, lr_decay_every=250, eval_every=150, checkpoint_every=150,
                   log_every=50)
    c.crf.update(sigma2_grid=(1.0, 10.0), max_iter=100, compare_variants=False)
  return c


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("demo")
  config = _config(tmp_path)
  workdir = str(tmp_path / "work")
  return config, workdir, experiment.run(config, workdir)


def test_results_report_and_plots(demo_run):
  config, workdir, out = demo_run
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["summary"] == out["summary"]
  fold = results["folds"][0]
  for key in ("accuracy_softmax", "accuracy_crf", "per_class_softmax", "per_class_crf",
              "confusion_softmax", "confusion_crf", "sigma2", "sizes"):
    assert key in fold
  k = len(results["class_names"])
  confusion = np.array(fold["confusion_crf"])
  assert confusion.shape == (k, k) and confusion.sum() == fold["sizes"]["test_frames"]
  assert np.isclose(np.trace(confusion) / confusion.sum(), fold["accuracy_crf"])
  assert fold["sigma2"] in config.crf.sigma2_grid
  # Test subjects never trained on or validated on.
  assert fold["sizes"]["test_sequences"] > 0
  report = open(os.path.join(workdir, "report.md")).read()
  assert f"{100 * out['summary']['accuracy_crf']['mean']:.2f}" in report
  assert "| CNN + CRF |" in report
  for name in ("confusion_softmax.png", "confusion_crf.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_crf_improves_on_softmax_on_synthetic(demo_run):
  _, _, out = demo_run
  s = out["summary"]
  assert s["accuracy_crf"]["mean"] >= s["accuracy_softmax"]["mean"]
  assert s["accuracy_softmax"]["mean"] > 1 / 7  # Above chance over the seven classes.


def test_rerun_skips_finished_folds(demo_run, monkeypatch):
  config, workdir, out = demo_run

  def no_training(*args, **kwargs):
    raise AssertionError("a finished fold was trained again")

  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  again = experiment.run(config, workdir)
  assert again["summary"] == out["summary"]


def _seqs(class_names, label_rows, subject="S1"):
  frames = [np.zeros((len(r), 8, 8, 3), np.uint8) for r in label_rows]
  return pipeline.Sequences(frames=frames, labels=[np.array(r) for r in label_rows],
                            subjects=[subject] * len(label_rows),
                            names=[f"q{i}" for i in range(len(label_rows))],
                            class_names=class_names)


def test_cross_database_label_mapping():
  # FERA: joy -> happiness, relief dropped whole.
  fera = _seqs(labels.FERA5, [[2, 2, 2], [3, 3], [0, 0]])
  shared = experiment.to_shared_space(fera, labels.cross_db_classes("ck_plus"), prefix="fera")
  assert shared.class_names == labels.CROSS_DB_CLASSES
  assert [list(l) for l in shared.labels] == [[3, 3, 3], [1, 1]]
  assert list(shared.subjects) == ["fera/S1", "fera/S1"]
  # CK+ held out against FERA: neutral ends cut, disgust and surprise sequences dropped whole.
  ck = _seqs(labels.BASIC7, [[0, 0, 4, 4], [0, 2, 2], [0, 0, 6], [0, 5, 5, 0]])
  shared = experiment.to_shared_space(ck, labels.cross_db_classes("fera"), prefix="ck_plus")
  names = labels.cross_db_classes("fera")
  assert "neutral" not in names
  assert [list(l) for l in shared.labels] == [[names.index("happiness")] * 2,
                                              [names.index("sadness")] * 2]
  assert [x.shape[0] for x in shared.frames] == [2, 2]


def test_missing_licensed_data_prints_instructions(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "fer_jax.main", "--config=configs/mmi.py:tiny",
       f"--workdir={tmp_path / 'w'}", f"--config.data.manual_dir={tmp_path / 'nothing_here'}",
       f"--config.data.data_dir={tmp_path / 'tfds'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "ManualDataError" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert "nothing_here" in proc.stderr


def test_cross_database_loading_from_fake_copies(tmp_path):
  import fake_databases as fake  # pylint: disable=g-import-not-at-top
  from configs import cross_db  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "manual"
  fake.write_ck_plus(str(manual / "ck_plus"), [("S005", "001", "5.0", 5), ("S005", "002", "3.0", 4),
                                               ("S010", "001", "1.0", 5)], size=16)
  fake.write_mmi(str(manual / "mmi"), [(1, "S001-001", "4", 8, "0", None, False),
                                       (2, "S002-001", "6", 8, "0", None, False)], size=16)
  fake.write_fera(str(manual / "fera"),
                  train=[("actor01", "t1", "joy", 4), ("actor01", "t2", "relief", 4)],
                  test=[("actor05", "e1", "sadness", 3)], size=16)
  config = cross_db.get_config("fera,tiny")
  with config.unlocked():
    config.data.update(manual_dir=str(manual), data_dir=str(tmp_path / "tfds"), image_size=16,
                       register=False)
    config.protocol.val_fraction = 0.0
  seqs, folds, database, protocol = experiment.load_data(config)
  assert database == "fera" and "test on fera" in protocol
  assert seqs.class_names == labels.cross_db_classes("fera")
  (fold,) = folds
  train_subjects = {s.split("/")[0] for s in seqs.subjects[fold.train]}
  assert train_subjects == {"ck_plus", "mmi"}  # Disgust (CK+) and surprise (MMI) dropped whole.
  assert len(fold.train) == 3
  test = seqs.subset(fold.test)
  assert list(test.subjects) == ["fera/actor01", "fera/actor05"]  # Relief dropped; joy kept.
  happiness = seqs.class_names.index("happiness")
  assert sorted(int(l[0]) for l in test.labels) == sorted([happiness, seqs.class_names.index("sadness")])
  for l in seqs.subset(fold.train).labels:  # No neutral class: the neutral ends were cut.
    assert len(set(l.tolist())) == 1
