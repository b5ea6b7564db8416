"""The two-stage experiment end to end on the synthetic set, resume, cross-database labels, user errors."""
import copy
import dataclasses
import glob
import json
import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from fer_jax import crf
from fer_jax import crf_inputs
from fer_jax import experiment
from fer_jax import joint
from fer_jax import models
from fer_jax import train
from fer_jax.data import labels
from fer_jax.data import pipeline
from fer_jax.data import splits

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
    c.joint.update(steps=10, eval_every=5, checkpoint_every=5, log_every=5)  # Every row, cheaply.
  return c


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("demo")
  config = _config(tmp_path)
  workdir = str(tmp_path / "work")
  real_mesh = train.make_mesh
  with pytest.MonkeyPatch.context() as m:
    # One device: these tests check what the experiment computes; sharding is tested in test_train,
    # test_joint and test_launch (8 fake devices on 2 cores make this run ~2x slower).
    m.setattr(train, "make_mesh", lambda devices=None: real_mesh(devices or jax.devices()[:1]))
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
  # A quarter of the 12 subjects tested, each with all 6 of its sequences (that they are never trained
  # or validated on: test_no_leakage_from_test_subjects).
  assert len(set(fold["test_subjects"])) == 3 and fold["sizes"]["test_sequences"] == 18
  report = open(os.path.join(workdir, "report.md")).read()
  assert f"{100 * out['summary']['accuracy_crf']['mean']:.2f}" in report
  assert "| CNN + CRF |" in report
  # Every method's row: frame accuracy recomputed from the CRF row's confusion, the rest in range.
  assert set(fold["rows"]) == {"cnn", "crf/logits", "crf/geometry", "crf/logits+geometry",
                               "joint/logits"}
  assert np.isclose(fold["rows"]["crf/logits"]["frame_accuracy"], fold["accuracy_crf"])
  assert np.isclose(fold["rows"]["cnn"]["frame_accuracy"], fold["accuracy_softmax"])
  for row in fold["rows"].values():
    assert row["num_sequences"] == 18 and row["num_frames"] == fold["sizes"]["test_frames"]
    assert all(0 <= row[m] <= 1 for m in experiment.ROW_METRICS)
  for name in ("geometry + CRF", "fused + CRF", "joint CNN + CRF"):
    assert f"| {name}" in report
  for name in ("confusion_softmax.png", "confusion_crf.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def _fold_zero(config, workdir):
  """(parts {"train", "val", "test": Sequences}, stage 1's CNN, number of classes) of fold 0."""
  seqs, folds, _, _ = experiment.load_data(config)
  f = folds[0]
  parts = {"train": seqs.subset(f.train), "val": seqs.subset(f.val), "test": seqs.subset(f.test)}
  num_classes = len(seqs.class_names)
  return parts, train.load_model(config, os.path.join(workdir, "fold_0", "cnn"), num_classes), \
      num_classes


def test_joint_stage_refits_the_crf_on_the_fine_tuned_cnn(demo_run, tmp_path, monkeypatch):
  config, workdir, _ = demo_run
  parts, model, num_classes = _fold_zero(config, workdir)
  outs = {name: experiment.model_outputs(model, config, s) for name, s in parts.items()}
  landmarks = {name: s.landmarks for name, s in parts.items()}
  inputs, train_sets, val, test = experiment._crf_data(config, "logits", outs, landmarks, None)
  stage2 = experiment.crf_variants(config, train_sets, val, test, parts["train"].subjects,
                                   num_classes, 0, ("validation",))["in_sample/validation"]
  # Stage 3 stands in: "fine-tuning" moved FC2's kernel (mixing the classes: a per-class shift or
  # scale would vanish in the standardisation) and validation kept step 7 (or step 0).
  config = copy.deepcopy(config)
  tuned = train.load_model(config, os.path.join(workdir, "fold_0", "cnn"), num_classes)
  kernel = tuned.fc2.kernel[...]
  tuned.fc2.kernel[...] = kernel + 0.5 * jnp.std(kernel) * jax.random.normal(
      jax.random.key(0), kernel.shape)
  best = {}
  monkeypatch.setattr(joint, "train_joint", lambda *a, **k: joint.JointResult(
      model=model if best["step"] == 0 else tuned, crf_params=stage2["params"],
      best_step=best["step"], best_val_accuracy=0.5, history=[], seconds=0.0))

  def run(step, refit=True):
    best["step"] = step
    with config.unlocked():
      config.joint.refit_crf = refit
    d = str(tmp_path / f"step{step}_{refit}")
    tags, info = experiment.joint_stage(config, d, model=model, inputs=inputs, variant=stage2,
                                        parts=parts, num_classes=num_classes, seed=0)
    return tags, info, crf.load_crf(os.path.join(d, "crf.npz"))

  tags, info, (params, sigma2, extras) = run(7)
  assert info["crf"] == "refit" and info["best_step"] == 7 and sigma2 == info["sigma2"]
  # The saved CRF and its input statistics, applied as predict applies them to the tuned CNN's
  # outputs, give the test tags; its statistics are the tuned CNN's training outputs'.
  rebuilt = crf_inputs.CrfInputs.from_extras(extras)
  t_out = train.predict_batches(tuned, config, pipeline.eval_batches(parts["train"], 32))
  np.testing.assert_allclose(rebuilt.mean, t_out["logits"].mean(0), rtol=1e-4, atol=1e-4)
  logits, true, mask = pipeline.sequence_arrays(
      parts["test"], train.predict_batches(tuned, config, pipeline.eval_batches(parts["test"], 32))[
          "logits"])
  x = np.stack([rebuilt({"logits": l}) for l in logits]) * mask[..., None]
  np.testing.assert_array_equal(np.asarray(crf.predict(params, x, mask)), tags)
  # It is stage 2's fit on the tuned CNN's training outputs: a fresh fit from zero agrees.
  _, train_tags, train_mask = train_sets["in_sample"]
  x_train = np.stack([rebuilt({"logits": l}) for l in experiment.model_outputs(
      tuned, config, parts["train"])[0]["logits"]]) * train_mask[..., None]
  fresh, _ = crf.fit(x_train, train_tags, train_mask, sigma2=sigma2, num_classes=num_classes,
                     max_iter=1000, tol=1e-7)
  objective = lambda p: float(crf.objective(p, x_train, train_tags, train_mask, sigma2))
  assert objective(params) == pytest.approx(objective(fresh), rel=1e-3)
  assert objective(stage2["params"]) > objective(fresh) * 1.01  # The refit did change the CRF.
  # Step 0 kept: stage 2's CRF and tags as they are; refit_crf False: the CRF trained beside the CNN.
  tags, info, (params, sigma2, _) = run(0)
  assert info["crf"] == "stage2" and sigma2 == stage2["sigma2"]
  np.testing.assert_array_equal(tags, stage2["test_tags"])
  np.testing.assert_array_equal(params.weights, stage2["params"].weights)
  tags, info, _ = run(7, refit=False)
  want, _ = joint.predict_tags(tuned, stage2["params"], config, parts["test"],
                               joint.CRFInput(mean=inputs.mean, std=inputs.std))
  assert info["crf"] == "joint"
  np.testing.assert_array_equal(tags, want)


def test_predict_loads_the_joint_stage(demo_run):
  # predict --stage=joint: the CNN is the "cnn" part of stage 3's best checkpoint (read here by orbax
  # alone, without a target), the CRF and its input statistics are fold_0/joint/crf.npz.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from fer_jax import predict  # pylint: disable=g-import-not-at-top
  config, workdir, _ = demo_run
  joint_dir = os.path.join(workdir, "fold_0", "joint", "best")
  (step,) = [int(n) for n in os.listdir(joint_dir) if n.isdigit()]
  saved = ocp.StandardCheckpointer().restore(os.path.join(joint_dir, str(step), "default"))
  f = predict.load_fold(workdir, 0, stage="joint")

  def flat(tree):  # {("blocks_a", "0", ...): array}: orbax names integer keys as strings.
    return {tuple(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}

  want = flat(saved["params"]["cnn"])
  for kind, theirs in ((nnx.Param, want), (nnx.BatchStat, flat(saved["batch_stats"]))):
    ours = flat(nnx.to_pure_dict(nnx.state(f.model, kind)))
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for key, value in ours.items():
      np.testing.assert_array_equal(value, theirs[key], err_msg=str(key))
  params, _, extras = crf.load_crf(os.path.join(workdir, "fold_0", "joint", "crf.npz"))
  np.testing.assert_array_equal(f.params.weights, params.weights)
  np.testing.assert_array_equal(f.inputs.mean, crf_inputs.CrfInputs.from_extras(extras).mean)
  # Stage 2's fold is another CNN unless validation kept step 0.
  stage1 = flat(nnx.to_pure_dict(nnx.state(predict.load_fold(workdir, 0).model, nnx.Param)))
  assert all(np.array_equal(v, want[key]) for key, v in stage1.items()) == (step == 0)


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


# --- Leakage: the test subjects of a fold reach nothing that is fitted (CNN, sigma^2, CRF).

class _TinyNet(nnx.Module):
  """Stand-in for the CNN with its call contract: images [B, H, W, 3] -> {"logits", "features"}."""

  def __init__(self, num_classes, rngs):
    self.conv = nnx.Conv(3, 8, (5, 5), strides=4, rngs=rngs)
    self.fc1 = nnx.Linear(8, 16, rngs=rngs)
    self.fc2 = nnx.Linear(16, num_classes, rngs=rngs)

  def __call__(self, images, train=False):
    del train
    features = nnx.relu(self.fc1(jnp.mean(nnx.relu(self.conv(images)), axis=(1, 2))))
    return {"logits": self.fc2(features), "features": features}


def _leak_config(tmp_path):
  c = demo.get_config("smoke")  # 10 subjects x 2 sequences of 6-10 frames.
  with c.unlocked():
    c.data.data_dir = str(tmp_path / "tfds")
    c.data.image_size = 24
    c.protocol.update(num_folds=2, test_fraction=None, val_fraction=0.1, folds=None)
    c.train.update(batch_size=16, num_steps=16, learning_rate=0.05, eval_every=8,
                   checkpoint_every=8, log_every=8, eval_batch_size=32)
    # Every variant: cross-fitted CNNs and sigma^2 by inner cross-validation must not see the test
    # subjects either.
    c.crf.update(sigma2_grid=(0.1, 10.0), max_iter=20, compare_variants=True, cross_fit_folds=2,
                 inner_cv_folds=2)
  return c


def _with_noise(real_load_data, part):
  """experiment.load_data with the frames of fold 0's `part` ("test" | "train") sequences replaced by
  noise."""
  def load_data(config):
    seqs, folds, database, protocol = real_load_data(config)
    frames = list(seqs.frames)
    for i in getattr(folds[0], part):
      frames[i] = np.random.default_rng(int(i)).integers(0, 256, frames[i].shape, np.uint8)
    return dataclasses.replace(seqs, frames=frames), folds, database, protocol
  return load_data


def _fitted(config, fold_dir, num_classes):
  """Everything fitted in a fold: {name: array} of the CNN weights (main and cross-fitted) and the CRF."""
  out = {}
  for cnn in sorted(glob.glob(os.path.join(fold_dir, "**", "cnn"), recursive=True)):
    params = nnx.state(train.load_model(config, cnn, num_classes), nnx.Param)
    for path, x in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params)):
      out[os.path.relpath(cnn, fold_dir) + jax.tree_util.keystr(path)] = np.asarray(x)
  with np.load(os.path.join(fold_dir, "crf.npz")) as z:
    out.update({f"crf/{k}": z[k] for k in z.files})
  return out


def test_no_leakage_from_test_subjects(tmp_path, monkeypatch):
  monkeypatch.setattr(models, "create_model", lambda model_config, num_classes, rngs:
                      _TinyNet(num_classes, rngs))
  trained = []  # (workdir, train subjects, val subjects) of every CNN trained.
  predicted = []  # The CNN outputs of every predict_batches call, in order.
  real_train_cnn, real_predict = experiment.train_cnn, train.predict_batches

  def train_cnn(config, workdir, train_seqs, val_seqs, *args):
    trained.append((workdir, set(train_seqs.subjects), set(val_seqs.subjects)))
    return real_train_cnn(config, workdir, train_seqs, val_seqs, *args)

  def predict_batches(*args, **kwargs):
    out = real_predict(*args, **kwargs)
    predicted.append(np.asarray(out["logits"]))
    return out

  monkeypatch.setattr(experiment, "train_cnn", train_cnn)
  monkeypatch.setattr(train, "predict_batches", predict_batches)
  real_mesh = train.make_mesh  # One device (as demo_run): leakage does not depend on sharding.
  monkeypatch.setattr(train, "make_mesh", lambda devices=None: real_mesh(devices or jax.devices()[:1]))
  config = _leak_config(tmp_path)
  out = experiment.run(config, str(tmp_path / "all"))

  # Plain k-fold (test_fraction=None): the generator's subjects S001..S010 each tested exactly once.
  everyone = {f"S{i:03d}" for i in range(1, 11)}
  tested = [set(f["test_subjects"]) for f in out["folds"]]
  assert len(tested) == 2 and tested[0] | tested[1] == everyone and len(tested[0]) == 5
  for k, (fold, test) in enumerate(zip(out["folds"], tested)):
    assert fold["sizes"]["test_sequences"] == 2 * len(test)  # 2 sequences per subject.
    runs = [(w, tr, va) for w, tr, va in trained if f"fold_{k}{os.sep}" in w]
    assert len(runs) == 1 + config.crf.cross_fit_folds
    (_, main_train, main_val), cross_fitted = runs[0], runs[1:]
    assert main_train and main_val and not main_train & main_val
    assert main_train | main_val == everyone - test  # Subjects disjoint; nobody left out.
    for _, tr, va in cross_fitted:  # Cross-fitted CNNs: inside the fold's training subjects.
      assert tr and va and not tr & va and tr | va < main_train
    assert set(fold["variants"]) == {"in_sample/validation", "in_sample/inner_cv",
                                     "cross_fit/validation", "cross_fit/inner_cv"}

  # Fold 0 again with its test frames replaced by noise, then with its training frames replaced.
  num_classes = len(out["class_names"])
  with config.unlocked():
    config.protocol.folds = (0,)
  fitted = {"same": _fitted(config, str(tmp_path / "all" / "fold_0"), num_classes)}
  results, outputs = {"same": out["folds"][0]}, {}
  for part in ("test", "train"):
    first = len(predicted)
    with monkeypatch.context() as m:
      m.setattr(experiment, "load_data", _with_noise(experiment.load_data, part))
      if part == "train":  # The control needs the main CNN and the CRF only.
        m.setitem(config.crf, "compare_variants", False)
      results[part] = experiment.run(config, str(tmp_path / part))["folds"][0]
    outputs[part] = predicted[first:]
    fitted[part] = _fitted(config, str(tmp_path / part / "fold_0"), num_classes)
  outputs["same"] = predicted[:len(outputs["test"])]  # Fold 0 ran first.
  # 3 CNNs (conv, fc1, fc2: kernel + bias each) and the CRF (its parameters, sigma^2, input statistics).
  assert sum(not k.startswith("crf/") for k in fitted["same"]) == 3 * 6
  assert {f"crf/{k}" for k in ("weights", "bias", "transitions", "start", "end")} <= fitted["same"].keys()
  # New test frames: every fitted number, every chosen sigma^2 and every selection score unchanged ...
  assert fitted["test"].keys() == fitted["same"].keys()
  for key, value in fitted["same"].items():
    np.testing.assert_array_equal(fitted["test"][key], value, err_msg=key)
  same, noisy = results["same"], results["test"]
  assert noisy["variants"].keys() == same["variants"].keys()
  for name, v in same["variants"].items():
    assert noisy["variants"][name]["sigma2"] == v["sigma2"]
    assert noisy["variants"][name]["selection_scores"] == v["selection_scores"]
  if config.joint.steps:  # Stage 3 (fine-tuning on training windows, validated) as well.
    assert noisy["joint"]["best_step"] == same["joint"]["best_step"]
    assert noisy["joint"]["val_accuracy"] == same["joint"]["val_accuracy"]
    assert noisy["joint"]["sigma2"] == same["joint"]["sigma2"]
  # ... while the noise reached the test set: of all CNN outputs, only those of the test frames moved ...
  moved = [not np.array_equal(a, b) for a, b in zip(outputs["test"], outputs["same"])]
  assert len(outputs["test"]) == len(outputs["same"]) and any(moved)
  assert all(len(a) == same["sizes"]["test_frames"] for a, m in zip(outputs["test"], moved) if m)
  # ... and new training frames move the CNN and the CRF (the comparisons above can fail).
  for key in ("cnn['fc2']['kernel']", "crf/transitions"):
    assert not np.allclose(fitted["train"][key], fitted["same"][key]), key


# --- A setting where the CRF must help: every frame's evidence is noisy, the sequence's is not.

COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                    [0, 255, 255]])  # One flat colour per class.


def _noisy_frame_sequences(num_subjects=12, per_subject=6, shown=0.6, seed=0):
  """Sequences neutral -> emotion (-> neutral), whose frames show their class's colour with
  probability `shown` and another class's colour otherwise; 16 x 16 frames with pixel noise."""
  rng = np.random.default_rng(seed)
  frames, tags, subjects, names = [], [], [], []
  for s in range(num_subjects):
    for q in range(per_subject):
      length = int(rng.integers(14, 21))
      onset, offset = int(rng.integers(2, 5)), length - (int(rng.integers(2, 5)) if q % 2 else 0)
      y = np.zeros(length, np.int32)
      y[onset:offset] = 1 + (s + q) % 6
      wrong = (y + rng.integers(1, 7, length)) % 7  # A uniformly drawn other class.
      colour = np.where(rng.random(length) < shown, y, wrong)
      noise = rng.integers(-40, 41, (length, 16, 16, 3))
      frames.append(np.clip(COLOURS[colour][:, None, None, :] + noise, 0, 255).astype(np.uint8))
      tags.append(y)
      subjects.append(f"S{s:02d}")
      names.append(f"S{s:02d}_{q}")
  return pipeline.Sequences(frames=frames, labels=tags, subjects=np.array(subjects),
                            names=np.array(names), class_names=labels.BASIC7)


def test_crf_beats_softmax_where_frames_are_noisy_and_sequences_not(tmp_path, monkeypatch):
  shown = 0.6  # A perfect frame classifier is right on 60% of the frames; the sequences are clean.
  seqs = _noisy_frame_sequences(shown=shown)

  def load_data(config):
    p = config.protocol
    folds = splits.subject_independent_folds(seqs.subjects, num_folds=p.num_folds,
                                             val_fraction=p.val_fraction,
                                             test_fraction=p.test_fraction, seed=config.seed)
    return seqs, folds, "synthetic_expressions", "noisy frames"

  monkeypatch.setattr(experiment, "load_data", load_data)
  monkeypatch.setattr(models, "create_model", lambda model_config, num_classes, rngs:
                      _TinyNet(num_classes, rngs))
  c = demo.get_config("smoke")
  with c.unlocked():
    c.data.update(image_size=16)
    c.data.augment.update(flip=False, crop_fraction=1.0, brightness=0.0)
    c.protocol.update(num_folds=4, test_fraction=0.25, val_fraction=0.1, folds=(0,))
    c.train.update(batch_size=32, num_steps=150, learning_rate=0.1, lr_decay_every=1000,
                   eval_every=50, checkpoint_every=150, log_every=50)
    c.crf.update(sigma2_grid=(1.0, 10.0), max_iter=100, inner_cv_folds=2, compare_variants=False)
    c.joint.steps = 0
  fold = experiment.run(c, str(tmp_path / "work"))["folds"][0]
  # The CNN learnt the colours: its frame accuracy is about `shown` (a flipped frame is always wrong).
  assert abs(fold["accuracy_softmax"] - shown) < 0.08, fold["accuracy_softmax"]
  # The CRF overrules isolated wrong frames: far better than any frame classifier can be (measured:
  # 0.62 -> 0.87).
  assert fold["accuracy_crf"] > fold["accuracy_softmax"] + 0.15, fold["accuracy_crf"]
