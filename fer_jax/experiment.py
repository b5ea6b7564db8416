"""One experiment end to end: protocol folds -> CNN (stage 1) -> CRF inputs -> CRF (stage 2) -> stage 3
(joint CNN + CRF, when joint.steps > 0) -> results.

Rows (one per method, each with frame and sequence accuracy on the test sequences): "cnn" (softmax),
"crf/<spec>" for the CRF on every feature set of crf.features and crf.compare_features (e.g. logits,
geometry, logits+geometry; crf_inputs.py), "joint/<spec>" for stage 3 on crf.features.

Workdir layout:
  fold_<k>/cnn/                 stage-1 checkpoints, metrics.jsonl, TensorBoard events (train.py)
  fold_<k>/cross_fit_<j>/cnn/   CNNs trained without training-subject group j (cross-fitted CRF features)
  fold_<k>/crf.npz              the CRF on crf.features with its input spec and standardisation (predict)
  fold_<k>/joint/               stage 3 (joint.py; crf.npz: the CRF of the joint row, see joint_stage)
  fold_<k>/result.json          the finished fold (a rerun skips it)
  results.json, report.md, confusion_softmax.png, confusion_crf.png, tensorboard/
"""
import json
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from fer_jax import config_validation
from fer_jax import crf
from fer_jax import crf_inputs
from fer_jax import errors
from fer_jax import evaluate
from fer_jax import geometry
from fer_jax import joint
from fer_jax import metrics_writer
from fer_jax import report
from fer_jax import train
from fer_jax.data import actors
from fer_jax.data import labels as labels_lib
from fer_jax.data import pipeline
from fer_jax.data import splits

DATABASES = ("ck_plus", "mmi", "fera")
ROW_METRICS = ("frame_accuracy", "sequence_accuracy_last", "sequence_accuracy_majority")


def _data_config(config, name: str, manual_dir):
  """A copy of config.data for one database (cross-database runs load three)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.name = name
  data.manual_dir = manual_dir
  return data


def load_data(config):
  """Loads the sequences and the protocol's folds.

  Returns:
    (sequences, folds, database, protocol description). Fold indices index `sequences`.
  """
  p = config.protocol
  if p.kind == "subject_independent":
    seqs = pipeline.load_sequences(config.data, split="train")
    folds = splits.subject_independent_folds(
        seqs.subjects, num_folds=p.num_folds, val_fraction=p.val_fraction,
        test_fraction=p.test_fraction, seed=config.seed)
    test = "1/num_folds" if p.test_fraction is None else f"{p.test_fraction:.0%}"
    desc = (f"subject-independent, {p.num_folds} folds, {test} of subjects tested and "
            f"{p.val_fraction:.0%} validated per fold (disjoint by subject).")
    return seqs, folds, config.data.name, desc
  if p.kind == "official":
    train_part = pipeline.load_sequences(config.data, split="train")
    test_part = pipeline.load_sequences(config.data, split="test")
    folds = splits.official_folds(train_part.subjects, test_part.subjects,
                                  val_fraction=p.val_fraction, seed=config.seed)
    desc = (f"official train/test split of {config.data.name}; validation: {p.val_fraction:.0%} "
            "of the training subjects.")
    return pipeline.Sequences.concat([train_part, test_part]), folds, config.data.name, desc
  if p.kind == "cross_db":
    heldout = p.heldout
    if heldout not in DATABASES:
      raise ValueError(f"protocol.heldout must be one of {DATABASES}, got {heldout!r}; "
                       "e.g. --config=configs/cross_db.py:mmi")
    parent = config.data.manual_dir
    parts = {}
    for name in [d for d in DATABASES if d != heldout] + [heldout]:
      manual = None if parent is None else os.path.join(parent, name)
      seqs = pipeline.Sequences.concat([
          pipeline.load_sequences(_data_config(config, name, manual), split=s)
          for s in (("train", "test") if name == "fera" else ("train",))])
      parts[name] = to_shared_space(seqs, labels_lib.cross_db_classes(heldout), prefix=name)
    train_names = [d for d in DATABASES if d != heldout]
    train_seqs = pipeline.Sequences.concat([parts[n] for n in train_names])
    folds = splits.cross_database_folds(train_seqs.subjects, parts[heldout].subjects,
                                        val_fraction=p.val_fraction, seed=config.seed)
    desc = (f"cross-database: train on {' + '.join(train_names)}, test on {heldout}; shared classes "
            f"{', '.join(parts[heldout].class_names)}; validation: {p.val_fraction:.0%} of training subjects.")
    return pipeline.Sequences.concat([train_seqs, parts[heldout]]), folds, heldout, desc
  raise ValueError(f"protocol.kind must be subject_independent, official or cross_db; got {p.kind!r}.")


def load_data_in_turn(config):
  """load_data, with process 0 preparing the TFDS files before the other processes read them."""
  if jax.process_count() == 1:
    return load_data(config)
  if jax.process_index() == 0:
    out = load_data(config)
  multihost_utils.sync_global_devices("fer_jax: data prepared")
  if jax.process_index() != 0:
    out = load_data(config)
  return out


def to_shared_space(seqs, shared_classes, prefix: str):
  """Maps a database's sequences into the cross-database label space (see fer_jax/data/labels.py).

  A sequence whose emotion has no counterpart (e.g. disgust, relief) is dropped whole; frames of a
  class absent from the space (neutral when FERA is held out) are cut from the ends of the sequence.
  Subject ids become "<prefix>/<id>" so that ids of different databases never collide.
  """
  keep_idx, frames, labels, points = [], [], [], []
  neutral = seqs.class_names.index("neutral") if "neutral" in seqs.class_names else -1
  for i, (x, y) in enumerate(zip(seqs.frames, seqs.labels)):
    mapped, keep = labels_lib.to_shared(y, seqs.class_names, shared_classes)
    if not keep[y != neutral].all() or not keep.any():
      continue
    run = np.flatnonzero(keep)
    if run[-1] - run[0] + 1 != run.size:
      raise ValueError(f"Sequence {seqs.names[i]}: the frames kept in the shared label space are not "
                       "one contiguous run; check its per-frame labels.")
    keep_idx.append(i)
    frames.append(x[keep])
    labels.append(mapped[keep])
    points.append(seqs.landmarks[i][keep])
  logging.info("Shared label space %s: kept %d of %d sequences.", shared_classes, len(keep_idx),
               len(seqs))
  subjects = np.array([f"{prefix}/{s}" for s in seqs.subjects[keep_idx]], dtype=object)
  return pipeline.Sequences(frames=frames, labels=labels, subjects=subjects,
                            names=seqs.names[keep_idx], class_names=tuple(shared_classes),
                            landmarks=points)


def train_cnn(config, workdir: str, train_seqs, val_seqs, num_classes: int, seed: int):
  """Stage 1 on the frames of train_seqs, best checkpoint chosen on val_seqs. Returns the model."""
  pid, pcount = jax.process_index(), jax.process_count()
  result = train.train_and_evaluate(
      config, workdir, num_classes=num_classes,
      train_batches=lambda start: pipeline.train_batches(
          train_seqs, config.train.batch_size, seed=seed, start_step=start,
          augment=config.data.augment, process_index=pid, process_count=pcount),
      eval_batches=lambda: pipeline.eval_batches(
          val_seqs, config.train.eval_batch_size, process_index=pid, process_count=pcount))
  return result.model


def model_outputs(model, config, seqs):
  """CNN outputs for every frame of seqs, as padded per-sequence arrays.

  Returns:
    {"logits": [N, T, C], "features": [N, T, F]}, tags int32 [N, T], mask bool [N, T].
  """
  out = train.predict_batches(model, config, pipeline.eval_batches(
      seqs, config.train.eval_batch_size, process_index=jax.process_index(),
      process_count=jax.process_count()))
  arrays = {}
  for key, values in out.items():
    arrays[key], tags, mask = pipeline.sequence_arrays(seqs, values)
  return arrays, tags, mask


def cross_fitted_outputs(config, fold_dir, train_seqs, num_classes, seed):
  """Out-of-fold CNN outputs for the training sequences: each group of training subjects is predicted
  by a CNN trained on the other groups (validated on a subject-disjoint slice of them).

  Returns:
    {"logits": [N, T, C], "features": [N, T, F]} float32, 0 at padding.
  """
  inner = splits.subject_independent_folds(
      train_seqs.subjects, num_folds=config.crf.cross_fit_folds,
      val_fraction=config.protocol.val_fraction, test_fraction=None, seed=seed)
  t_max = max(len(l) for l in train_seqs.labels)
  values = {}
  for j, f in enumerate(inner):
    logging.info("Cross-fit CNN %d/%d: %d training sequences, predicting %d.", j + 1, len(inner),
                 len(f.train), len(f.test))
    model = train_cnn(config, os.path.join(fold_dir, f"cross_fit_{j}", "cnn"),
                      train_seqs.subset(f.train), train_seqs.subset(f.val), num_classes, seed + 100 + j)
    out, _, _ = model_outputs(model, config, train_seqs.subset(f.test))
    for key, v in out.items():
      if key not in values:
        values[key] = np.zeros((len(train_seqs), t_max, v.shape[-1]), np.float32)
      values[key][f.test, :v.shape[1]] = v
  return values


def inner_cv_folds(subjects, config, seed):
  """(fit, held-out) index pairs over the training sequences: subject-disjoint groups for
  crf.select_sigma2_inner_cv."""
  inner = splits.subject_independent_folds(subjects, num_folds=config.crf.inner_cv_folds,
                                           val_fraction=0.0, test_fraction=None, seed=seed)
  return [(np.concatenate([f.train, f.val]).astype(int), f.test) for f in inner]


def _fit_kwargs(config, num_classes):
  return dict(solver=config.crf.solver, max_iter=config.crf.max_iter, tol=config.crf.tol,
              num_classes=num_classes)


def crf_variants(config, train_sets, val, test, train_subjects, num_classes, seed,
                 selections=("validation", "inner_cv")):
  """Fits the CRF for every (training features, sigma^2 selection) variant and decodes the test set.

  Args:
    train_sets: {"in_sample" | "cross_fit": (x [N, T, D], tags, mask)} training sequences.
    val, test: (x, tags, mask) of the validation and test sequences (CNN outputs of the fold's CNN).
    selections: the sigma^2 selections to run ("validation", "inner_cv").

  Returns:
    {"<features>/<selection>": {"sigma2", "test_tags" [N, T], "selection_scores"}}.
  """
  out = {}
  kwargs = _fit_kwargs(config, num_classes)
  grid = config.crf.sigma2_grid
  for features, (x, tags, mask) in train_sets.items():
    fits = crf.fit_path(x, tags, mask, grid, **kwargs)  # shared by both selections
    for selection in selections:
      if selection == "validation":
        sigma2, params, scores = crf.select_sigma2((x, tags, mask), val, grid, fits=fits, **kwargs)
      else:
        sigma2, params, scores = crf.select_sigma2_inner_cv(
            (x, tags, mask), inner_cv_folds(train_subjects, config, seed), grid, fits=fits, **kwargs)
      info = fits[float(sigma2)][1]
      logging.info("CRF %s/%s: sigma2=%g objective=%.4g iterations=%d converged=%s", features,
                   selection, sigma2, float(info.objective), int(info.iterations), bool(info.converged))
      out[f"{features}/{selection}"] = {
          "sigma2": float(sigma2), "selection_scores": _jsonable(scores),
          "test_tags": np.asarray(crf.predict(params, test[0], test[2])), "params": params}
  return out


def _jsonable(x):
  if hasattr(x, "_asdict"):  # NamedTuple rows, e.g. crf.SelectionRow.
    return _jsonable(x._asdict())
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  return x


def feature_sets(config) -> list:
  """The CRF input specs of a run: crf.features (the primary row), then crf.compare_features."""
  primary = config.crf.features
  return [primary] + [f for f in config.crf.compare_features if f != primary]


def _usable_feature_sets(config, seqs) -> list:
  """feature_sets, less the geometry ones when the data set has no landmarks (an error if primary)."""
  has_landmarks = any(np.isfinite(p).any() for p in seqs.landmarks)
  out = []
  for spec in feature_sets(config):
    if crf_inputs.CrfInputs(spec, config.crf.geometry_reference).uses_geometry and not has_landmarks:
      if spec == config.crf.features:
        raise errors.ConfigError(
            f"crf.features={spec!r} uses geometry, but {config.data.name} has no landmarks: rebuild "
            "it with a builder version that stores them, or set crf.features='logits'.")
      logging.warning("%s has no landmarks: the %r CRF row is skipped.", config.data.name, spec)
      continue
    out.append(spec)
  return out


def _crf_data(config, spec, outs, landmarks, cross_fit):
  """Standardised CRF inputs of every split for one feature set.

  Args:
    outs: {"train" | "val" | "test": (model outputs {name: [N, T, .]}, tags [N, T], mask [N, T])}.
    landmarks: {split: list of [T_i, 68, 2]}.
    cross_fit: cross-fitted training outputs {name: [N, T, .]} or None.

  Returns:
    (CrfInputs fitted on the training frames, train_sets {"in_sample" (, "cross_fit"): (x, tags,
    mask)}, val (x, tags, mask), test (x, tags, mask)); x float32 [N, T, D], 0 at padding.
  """
  inputs = crf_inputs.CrfInputs(spec, config.crf.geometry_reference)
  raw = {name: inputs.raw_sequences(o, landmarks[name], m) for name, (o, _, m) in outs.items()}
  inputs = inputs.fit(raw["train"], outs["train"][2])
  data = {name: (inputs.standardise(x) * outs[name][2][..., None], outs[name][1], outs[name][2])
          for name, x in raw.items()}
  train_sets = {"in_sample": data["train"]}
  if cross_fit is not None:
    _, tags, mask = outs["train"]
    x = inputs.standardise(inputs.raw_sequences(cross_fit, landmarks["train"], mask))
    train_sets["cross_fit"] = (x * mask[..., None], tags, mask)
  return inputs, train_sets, data["val"], data["test"]


def joint_inputs(inputs, parts: dict):
  """Stage 3's view of stage 2's CRF input: the CNN parts standardised inside the model, the geometry
  part (standardised here, NaN -> 0) as a constant per-frame input after them.

  Args:
    inputs: the fitted crf_inputs.CrfInputs of crf.features.
    parts: {"train" | "val" | "test": Sequences}.

  Returns:
    (joint.CRFInput, extra {split: list of float32 [T_i, G]} or None without geometry).
  """
  cnn = tuple(p for p in inputs.parts if p != "geometry")
  if not cnn or (inputs.uses_geometry and inputs.parts[-1] != "geometry"):
    raise errors.ConfigError(
        f"joint.steps > 0 with crf.features={inputs.spec!r}: stage 3 fine-tunes the CNN, so the CRF "
        "input needs a CNN part and geometry (if any) last, e.g. 'logits' or 'logits+geometry'.")
  if not inputs.uses_geometry:
    return joint.CRFInput(keys=cnn, mean=inputs.mean, std=inputs.std), None
  g = geometry.num_features(inputs.reference)
  mean, std = inputs.mean.copy(), inputs.std.copy()
  mean[-g:], std[-g:] = 0.0, 1.0  # Already standardised in `extra`.
  extra = {name: [inputs.standardised_geometry(p) for p in s.landmarks] for name, s in parts.items()}
  return joint.CRFInput(keys=cnn, mean=mean, std=std), extra


def joint_stage(config, workdir: str, *, model, inputs, variant: dict, parts: dict,
                num_classes: int, seed: int):
  """Stage 3 of one fold: joint fine-tuning (joint.train_joint), then the CRF refitted (refit_crf).

  With config.joint.refit_crf, the CRF that labels the test set is stage 2's procedure run again on
  the outputs of the fine-tuned CNN (the validation-best step): input statistics and CRF fitted on
  its in-sample training outputs (a fine-tuned CNN has no cross-fitted twin), sigma^2 chosen by
  crf.sigma2_selection. The CRF trained beside the CNN took joint.steps SGD steps from stage 2's
  optimum for another CNN; the refit is the exact MAP CRF of the CNN that is kept. When validation keeps
  step 0 the CNN is stage 1's and the refit would be stage 2's fit: stage 2's CRF is used as is.
  Without refit_crf, the CRF trained beside the CNN labels the test set.
  Writes workdir/crf.npz (crf.save_crf with the input statistics, as stage 2's crf.npz).

  Args:
    model: stage 1's CNN. inputs: the fitted crf_inputs.CrfInputs of crf.features (stage 2).
    variant: stage 2's configured CRF variant (crf_variants: "params", "sigma2").
    parts: {"train", "val", "test": Sequences}.

  Returns:
    (test tags int32 [N, T] as model_outputs' padding, info {"best_step", "val_accuracy",
    "crf": "refit" | "stage2" | "joint", "sigma2", "seconds", "labelling_seconds": of them the
    refit (or the test labelling) after training}).
  """
  t0 = time.perf_counter()
  crf_input, extra = joint_inputs(inputs, parts)
  extra = extra or {}
  res = joint.train_joint(config, workdir, model=model, crf_params=variant["params"],
                          sigma2=variant["sigma2"], train_seqs=parts["train"], val_seqs=parts["val"],
                          num_classes=num_classes, seed=seed, crf_input=crf_input,
                          train_extra=extra.get("train"), val_extra=extra.get("val"))
  t1 = time.perf_counter()
  if not config.joint.refit_crf:
    kind, params, sigma2 = "joint", res.crf_params, variant["sigma2"]
    tags, _ = joint.predict_tags(res.model, params, config, parts["test"], crf_input,
                                 extra.get("test"))
  elif res.best_step == 0:
    kind, params, sigma2, tags = "stage2", variant["params"], variant["sigma2"], variant["test_tags"]
  else:
    outs = {name: model_outputs(res.model, config, s) for name, s in parts.items()}
    landmarks = {name: s.landmarks for name, s in parts.items()}
    inputs, train_sets, val, test = _crf_data(config, inputs.spec, outs, landmarks, None)
    selection = config.crf.sigma2_selection
    fit = crf_variants(config, train_sets, val, test, parts["train"].subjects, num_classes, seed,
                       (selection,))[f"in_sample/{selection}"]
    kind, params, sigma2, tags = "refit", fit["params"], fit["sigma2"], fit["test_tags"]
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    crf.save_crf(os.path.join(workdir, "crf.npz"), params, sigma2, extras=inputs.to_extras())
  info = {"best_step": res.best_step, "val_accuracy": res.best_val_accuracy, "crf": kind,
          "sigma2": float(sigma2), "seconds": time.perf_counter() - t0,
          "labelling_seconds": time.perf_counter() - t1}
  logging.info("Stage 3: best step %d, validation accuracy %s, CRF %s (sigma2 %g), %.1f s.",
               res.best_step, res.best_val_accuracy, kind, sigma2, info["seconds"])
  return tags, info


def neutral_index(class_names):
  """The index of "neutral" in class_names, or None (FERA has no neutral class)."""
  return list(class_names).index("neutral") if "neutral" in class_names else None


def run_fold(config, fold_dir: str, seqs, fold, k: int) -> dict:
  """Both stages on one fold; returns the fold's result dict (also written to fold_dir/result.json).

  result["rows"] holds one evaluate.row_metrics dict (frame and sequence accuracy on the test set) per
  method: "cnn" (softmax), "crf/<spec>" for every feature set of feature_sets(config).
  """
  num_classes = len(seqs.class_names)
  neutral = neutral_index(seqs.class_names)
  seed = config.seed + 1000 * k
  parts = {"train": seqs.subset(fold.train), "val": seqs.subset(fold.val),
           "test": seqs.subset(fold.test)}
  train_seqs, val_seqs, test_seqs = parts["train"], parts["val"], parts["test"]
  logging.info("Fold %d: %d/%d/%d sequences (%d/%d/%d frames) train/val/test.", k, len(train_seqs),
               len(val_seqs), len(test_seqs), train_seqs.num_frames, val_seqs.num_frames,
               test_seqs.num_frames)
  specs = _usable_feature_sets(config, seqs)
  seconds = {}  # Wall time of each stage of this fold (this process).
  clock = time.perf_counter()

  def lap(name):
    nonlocal clock
    now = time.perf_counter()
    seconds[name] = now - clock
    clock = now

  model = train_cnn(config, os.path.join(fold_dir, "cnn"), train_seqs, val_seqs, num_classes, seed)
  lap("cnn")
  outs = {name: model_outputs(model, config, s) for name, s in parts.items()}
  te, te_tags, te_mask = outs["test"]
  cross_fit = None
  if config.crf.train_features == "cross_fit" or config.crf.compare_variants:
    cross_fit = cross_fitted_outputs(config, fold_dir, train_seqs, num_classes, seed)
  lap("cnn_outputs")
  landmarks = {name: s.landmarks for name, s in parts.items()}
  primary = f"{config.crf.train_features}/{config.crf.sigma2_selection}"
  predictions = {"cnn": te["logits"].argmax(-1)}  # Test tags [N, T] of every report row.
  fitted = {}
  for spec in specs:
    inputs, train_sets, val, test = _crf_data(config, spec, outs, landmarks, cross_fit)
    if spec != config.crf.features:  # Compared rows: the configured variant only.
      train_sets = {config.crf.train_features: train_sets[config.crf.train_features]}
      selections = (config.crf.sigma2_selection,)
    else:
      selections = ("validation", "inner_cv")
    variants = crf_variants(config, train_sets, val, test, train_seqs.subjects, num_classes, seed,
                            selections)
    predictions[f"crf/{spec}"] = variants[primary]["test_tags"]
    fitted[spec] = (inputs, variants)
    lap(f"crf/{spec}")
  inputs, variants = fitted[config.crf.features]
  true = evaluate.masked_frames(te_tags, te_mask)
  softmax = evaluate.frame_metrics(evaluate.masked_frames(te["logits"].argmax(-1), te_mask), true,
                                   num_classes)
  with_crf = evaluate.frame_metrics(evaluate.masked_frames(variants[primary]["test_tags"], te_mask),
                                    true, num_classes)
  result = {
      "fold": k,
      "accuracy_softmax": softmax["accuracy"], "accuracy_crf": with_crf["accuracy"],
      "per_class_softmax": softmax["per_class"], "per_class_crf": with_crf["per_class"],
      "confusion_softmax": softmax["confusion"], "confusion_crf": with_crf["confusion"],
      "sigma2": variants[primary]["sigma2"], "crf_variant": primary,
      "crf_features": config.crf.features,
      "variants": {
          name: {"accuracy_crf": evaluate.frame_metrics(
                     evaluate.masked_frames(v["test_tags"], te_mask), true, num_classes)["accuracy"],
                 "sigma2": v["sigma2"], "selection_scores": v["selection_scores"]}
          for name, v in variants.items()},
      "sizes": {"train_sequences": len(train_seqs), "val_sequences": len(val_seqs),
                "test_sequences": len(test_seqs), "train_frames": train_seqs.num_frames,
                "val_frames": val_seqs.num_frames, "test_frames": test_seqs.num_frames},
      "test_subjects": sorted(set(str(s) for s in test_seqs.subjects)),
  }
  if config.joint.steps > 0:  # Stage 3 from this CNN and the configured CRF variant.
    joint_tags, result["joint"] = joint_stage(config, os.path.join(fold_dir, "joint"), model=model,
                                              inputs=inputs, variant=variants[primary], parts=parts,
                                              num_classes=num_classes, seed=seed)
    result["accuracy_joint"] = evaluate.frame_metrics(
        evaluate.masked_frames(joint_tags, te_mask), true, num_classes)["accuracy"]
    predictions[f"joint/{config.crf.features}"] = joint_tags
    lap(f"joint/{config.crf.features}")
  result["rows"] = {row: evaluate.row_metrics(tags, te_tags, te_mask, neutral)
                    for row, tags in predictions.items()}
  if config.protocol.kind == "official":  # FERA: test actors may also be training actors.
    result["person_independent"] = person_independent_rows(
        predictions, te_tags, te_mask, neutral, test_seqs.subjects,
        np.concatenate([train_seqs.subjects, val_seqs.subjects]))
  result["seconds"] = seconds
  if jax.process_index() == 0:
    crf.save_crf(os.path.join(fold_dir, "crf.npz"), variants[primary]["params"],
                 variants[primary]["sigma2"], extras=inputs.to_extras())
    _write_json(os.path.join(fold_dir, "result.json"), result)
  return result


def person_independent_rows(predictions, tags, mask, neutral, test_subjects, seen_subjects) -> dict:
  """The report rows restricted to test sequences whose subject (FERA: actor cluster, data/actors.py)
  is not among seen_subjects (training + validation): {"num_sequences", "rows": {row: row_metrics}}.

  Args:
    predictions: {row: test tags int [N, T]}; tags, mask: [N, T]; test_subjects: [N].
  """
  unseen = actors.unseen_in_training(test_subjects, seen_subjects)
  out = {"num_sequences": int(unseen.sum()), "num_test_sequences": int(unseen.size), "rows": {}}
  if unseen.any():
    out["rows"] = {row: evaluate.row_metrics(np.asarray(p)[unseen], tags[unseen], mask[unseen], neutral)
                   for row, p in predictions.items()}
  return out


def _write_json(path: str, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)  # Atomic: a killed run never leaves a half-written result.


def summarize(results: list, config, database: str, protocol: str, class_names) -> dict:
  """results.json: the folds and, per metric, mean and sample std over folds (evaluate.summarize).

  summary["rows"][row][metric] for every row present in all folds and metric frame_accuracy,
  sequence_accuracy_last, sequence_accuracy_majority.
  """
  summary = {m: evaluate.summarize([r[m] for r in results])
             for m in ("accuracy_softmax", "accuracy_crf", "accuracy_joint")
             if all(m in r for r in results)}
  primary = results[0]["crf_variant"]
  names = [primary] + sorted(n for n in results[0]["variants"] if n != primary)
  summary["variants"] = {n: evaluate.summarize([r["variants"][n]["accuracy_crf"] for r in results])
                         for n in names if all(n in r["variants"] for r in results)}
  summary["rows"] = {
      row: {m: evaluate.summarize([r["rows"][row][m] for r in results]) for m in ROW_METRICS}
      for row in results[0].get("rows", {}) if all(row in r.get("rows", {}) for r in results)}
  if all(r.get("person_independent", {}).get("rows") for r in results):
    pi = [r["person_independent"] for r in results]
    summary["person_independent"] = {
        "num_sequences": [p["num_sequences"] for p in pi],
        "num_test_sequences": [p["num_test_sequences"] for p in pi],
        "rows": {row: {m: evaluate.summarize([p["rows"][row][m] for p in pi]) for m in ROW_METRICS}
                 for row in pi[0]["rows"] if all(row in p["rows"] for p in pi)}}
  return {"database": database, "table": config.report.table, "protocol": protocol,
          "class_names": list(class_names), "folds": results, "summary": summary,
          "crf_features": results[0].get("crf_features", config.crf.features),
          "config": config.to_dict()}


def run(config, workdir: str) -> dict:
  """Runs every configured fold (skipping finished ones), then writes results.json and report.md."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:  # For fer_jax.predict.
      f.write(config.to_json_best_effort(indent=1))
  seqs, folds, database, protocol = load_data_in_turn(config)
  config_validation.validate_folds(config, seqs.subjects, folds)  # Before any training.
  logging.info("%s: %d sequences, %d frames, %d subjects, classes %s; %s", database, len(seqs),
               seqs.num_frames, len(set(seqs.subjects)), seqs.class_names, protocol)
  wanted = range(len(folds)) if config.protocol.folds is None else config.protocol.folds
  results = []
  for k in wanted:
    if not 0 <= k < len(folds):
      raise ValueError(f"protocol.folds names fold {k}, but the protocol has {len(folds)} folds.")
    fold_dir = os.path.join(workdir, f"fold_{k}")
    done = os.path.join(fold_dir, "result.json")
    if os.path.exists(done):
      logging.info("Fold %d already finished (%s): skipped.", k, done)
      with open(done) as f:
        results.append(json.load(f))
      continue
    results.append(run_fold(config, fold_dir, seqs, folds[k], k))
    logging.info("Fold %d: accuracy softmax %.4f, with CRF %.4f.", k, results[-1]["accuracy_softmax"],
                 results[-1]["accuracy_crf"])
  out = summarize(results, config, database, protocol, seqs.class_names)
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "results.json"), out)
    report.write(out, workdir)
    _write_tensorboard(out, workdir)
    logging.info("Mean accuracy: softmax %.4f, with CRF %.4f. Report: %s",
                 out["summary"]["accuracy_softmax"]["mean"], out["summary"]["accuracy_crf"]["mean"],
                 os.path.join(workdir, "report.md"))
  return out


def _write_tensorboard(results: dict, workdir: str):
  """Test accuracies per fold to workdir/metrics.jsonl and TensorBoard (step = fold): the softmax and
  primary CRF frame accuracies and, per row, "<row>/<metric>" for ROW_METRICS."""
  writer = metrics_writer.MetricWriter(workdir)
  writer.truncate_after(-1)  # A rerun writes every fold again.
  for r in results["folds"]:
    scalars = {m: r[m] for m in ("accuracy_softmax", "accuracy_crf")}
    scalars.update({f"{row}/{m}": v[m] for row, v in r.get("rows", {}).items() for m in ROW_METRICS})
    writer.write(r["fold"], "test", scalars)
  writer.close()
