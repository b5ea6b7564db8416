"""One experiment end to end: protocol folds -> CNN (stage 1) -> features -> CRF (stage 2) -> results.

Workdir layout:
  fold_<k>/cnn/                 stage-1 checkpoints, metrics.jsonl, TensorBoard events (train.py)
  fold_<k>/cross_fit_<j>/cnn/   CNNs trained without training-subject group j (cross-fitted CRF features)
  fold_<k>/result.json          the finished fold (a rerun skips it)
  results.json, report.md, confusion_softmax.png, confusion_crf.png, tensorboard/
"""
import dataclasses
import json
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from fer_jax import config_validation
from fer_jax import crf
from fer_jax import evaluate
from fer_jax import joint
from fer_jax import metrics_writer
from fer_jax import report
from fer_jax import train
from fer_jax.data import labels as labels_lib
from fer_jax.data import pipeline
from fer_jax.data import splits

DATABASES = ("ck_plus", "mmi", "fera")


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
  keep_idx, frames, labels = [], [], []
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
  logging.info("Shared label space %s: kept %d of %d sequences.", shared_classes, len(keep_idx),
               len(seqs))
  subjects = np.array([f"{prefix}/{s}" for s in seqs.subjects[keep_idx]], dtype=object)
  return pipeline.Sequences(frames=frames, labels=labels, subjects=subjects,
                            names=seqs.names[keep_idx], class_names=tuple(shared_classes))


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
  by a CNN trained on the other groups (validated on a subject-disjoint slice of them)."""
  inner = splits.subject_independent_folds(
      train_seqs.subjects, num_folds=config.crf.cross_fit_folds,
      val_fraction=config.protocol.val_fraction, test_fraction=None, seed=seed)
  key = config.crf.features
  values = None
  for j, f in enumerate(inner):
    logging.info("Cross-fit CNN %d/%d: %d training sequences, predicting %d.", j + 1, len(inner),
                 len(f.train), len(f.test))
    model = train_cnn(config, os.path.join(fold_dir, f"cross_fit_{j}", "cnn"),
                      train_seqs.subset(f.train), train_seqs.subset(f.val), num_classes, seed + 100 + j)
    out, _, _ = model_outputs(model, config, train_seqs.subset(f.test))
    if values is None:
      shape = (len(train_seqs), max(len(l) for l in train_seqs.labels), out[key].shape[-1])
      values = np.zeros(shape, np.float32)
    values[f.test, :out[key].shape[1]] = out[key]
  return values


def select_sigma2_inner_cv(x, tags, mask, subjects, config, num_classes, seed):
  """sigma^2 by inner cross-validation over the training subjects: pooled frame accuracy of CRFs fitted
  on the other subject groups. Returns (sigma2, {sigma2: accuracy})."""
  inner = splits.subject_independent_folds(subjects, num_folds=config.crf.inner_cv_folds,
                                           val_fraction=0.0, test_fraction=None, seed=seed)
  scores = {}
  for sigma2 in config.crf.sigma2_grid:
    correct = total = 0
    for f in inner:
      train_idx = np.concatenate([f.train, f.val]).astype(int)
      params, _ = crf.fit(x[train_idx], tags[train_idx], mask[train_idx], sigma2=sigma2,
                          **_fit_kwargs(config, num_classes))
      pred = np.asarray(crf.predict(params, x[f.test], mask[f.test]))
      m = mask[f.test]
      correct += int((pred == tags[f.test])[m].sum())
      total += int(m.sum())
    scores[float(sigma2)] = correct / total
  best = max(scores, key=lambda s: (scores[s], -abs(np.log10(s))))
  return best, scores


def _fit_kwargs(config, num_classes):
  return dict(solver=config.crf.solver, max_iter=config.crf.max_iter, tol=config.crf.tol,
              num_classes=num_classes)


def crf_variants(config, train_sets, val, test, train_subjects, num_classes, seed):
  """Fits the CRF for every (training features, sigma^2 selection) variant and decodes the test set.

  Args:
    train_sets: {"in_sample" | "cross_fit": (x [N, T, D], tags, mask)} training sequences.
    val, test: (x, tags, mask) of the validation and test sequences (CNN outputs of the fold's CNN).

  Returns:
    {"<features>/<selection>": {"sigma2", "test_tags" [N, T], "selection_scores"}}.
  """
  out = {}
  for features, (x, tags, mask) in train_sets.items():
    for selection in ("validation", "inner_cv"):
      if selection == "validation":
        sigma2, _, table = crf.select_sigma2((x, tags, mask), val, config.crf.sigma2_grid,
                                             **_fit_kwargs(config, num_classes))
        scores = table
      else:
        sigma2, scores = select_sigma2_inner_cv(x, tags, mask, train_subjects, config, num_classes,
                                                seed)
      params, info = crf.fit(x, tags, mask, sigma2=sigma2, **_fit_kwargs(config, num_classes))
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


def run_fold(config, fold_dir: str, seqs, fold, k: int) -> dict:
  """Both stages on one fold; returns the fold's result dict (also written to fold_dir/result.json)."""
  num_classes = len(seqs.class_names)
  seed = config.seed + 1000 * k
  train_seqs, val_seqs, test_seqs = (seqs.subset(fold.train), seqs.subset(fold.val),
                                     seqs.subset(fold.test))
  logging.info("Fold %d: %d/%d/%d sequences (%d/%d/%d frames) train/val/test.", k, len(train_seqs),
               len(val_seqs), len(test_seqs), train_seqs.num_frames, val_seqs.num_frames,
               test_seqs.num_frames)
  model = train_cnn(config, os.path.join(fold_dir, "cnn"), train_seqs, val_seqs, num_classes, seed)
  key = config.crf.features
  (tr, tr_tags, tr_mask), (va, va_tags, va_mask), (te, te_tags, te_mask) = (
      model_outputs(model, config, s) for s in (train_seqs, val_seqs, test_seqs))
  train_sets = {"in_sample": (tr[key], tr_tags, tr_mask)}
  if config.crf.train_features == "cross_fit" or config.crf.compare_variants:
    cf = cross_fitted_outputs(config, fold_dir, train_seqs, num_classes, seed)
    train_sets["cross_fit"] = (cf, tr_tags, tr_mask)
  variants = crf_variants(config, train_sets, (va[key], va_tags, va_mask),
                          (te[key], te_tags, te_mask), train_seqs.subjects, num_classes, seed)
  primary = f"{config.crf.train_features}/{config.crf.sigma2_selection}"
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
    joint_tags, result["joint"] = joint.run_stage(
        config, os.path.join(fold_dir, "joint"), model=model, crf_params=variants[primary]["params"],
        sigma2=variants[primary]["sigma2"], num_classes=num_classes, seed=seed,
        crf_input=joint.CRFInput(keys=(key,)),
        seqs={"train": train_seqs, "val": val_seqs, "test": test_seqs})
    result["accuracy_joint"] = evaluate.frame_metrics(
        evaluate.masked_frames(joint_tags, te_mask), true, num_classes)["accuracy"]
  if jax.process_index() == 0:
    save_crf(os.path.join(fold_dir, "crf.npz"), variants[primary]["params"], variants[primary]["sigma2"])
    _write_json(os.path.join(fold_dir, "result.json"), result)
  return result


def save_crf(path: str, params, sigma2: float):
  """Writes the fold's CRF (the configured variant) for fer_jax.predict."""
  arrays = {f.name: np.asarray(getattr(params, f.name)) for f in dataclasses.fields(crf.CRFParams)}
  np.savez(path, sigma2=sigma2, **arrays)


def load_crf(path: str):
  """Reads a CRF written by save_crf. Returns (CRFParams, sigma2)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: the fold has not finished stage 2; run "
                            "`python -m fer_jax.main` with the same --config and --workdir first.")
  with np.load(path) as z:
    fields = [f.name for f in dataclasses.fields(crf.CRFParams)]
    return crf.CRFParams(**{name: z[name] for name in fields}), float(z["sigma2"])


def _write_json(path: str, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)  # Atomic: a killed run never leaves a half-written result.


def summarize(results: list, config, database: str, protocol: str, class_names) -> dict:
  summary = {m: evaluate.summarize([r[m] for r in results])
             for m in ("accuracy_softmax", "accuracy_crf", "accuracy_joint")
             if all(m in r for r in results)}
  primary = results[0]["crf_variant"]
  names = [primary] + sorted(n for n in results[0]["variants"] if n != primary)
  summary["variants"] = {n: evaluate.summarize([r["variants"][n]["accuracy_crf"] for r in results])
                         for n in names if all(n in r["variants"] for r in results)}
  return {"database": database, "table": config.report.table, "protocol": protocol,
          "class_names": list(class_names), "folds": results, "summary": summary,
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
  """Test accuracies per fold to workdir/metrics.jsonl and TensorBoard (step = fold)."""
  writer = metrics_writer.MetricWriter(workdir)
  writer.truncate_after(-1)  # A rerun writes every fold again.
  for r in results["folds"]:
    writer.write(r["fold"], "test", {m: r[m] for m in ("accuracy_softmax", "accuracy_crf")})
  writer.close()
