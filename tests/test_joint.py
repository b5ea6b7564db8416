"""Tests for stage 3 (fer_jax/joint.py) and pipeline.window_batches (8 fake CPU devices).

A Conv+BatchNorm+Dropout+Linear stand-in for the CNN (same call contract as create_model's) keeps
every compile to about a second; the window likelihood is checked against brute-force enumeration.
"""
import itertools
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from fer_jax import checkpoint as checkpoint_lib
from fer_jax import crf
from fer_jax import joint
from fer_jax import models
from fer_jax import train
from fer_jax.data import pipeline
from stand_in import TinyNet as _TinyNet
from stand_in import tiny_net  # noqa: F401  (a fixture)

K = 4
SIZE = 16
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])


def _seqs(n, seed, min_len=3, max_len=9, noise=120):
  """n sequences; a frame's colour says its label (plus noise); labels change in runs."""
  rs = np.random.RandomState(seed)
  frames, labels = [], []
  for _ in range(n):
    length = rs.randint(min_len, max_len + 1)
    y = np.repeat(rs.randint(0, K, 3), [length // 3, length // 3, length - 2 * (length // 3)])
    x = COLOURS[y][:, None, None, :] + rs.randint(-noise, noise + 1, (length, SIZE, SIZE, 3))
    frames.append(np.clip(x, 0, 255).astype(np.uint8))
    labels.append(y)
  return pipeline.Sequences(frames, labels, [f"s{i}" for i in range(n)],
                            [f"q{i}" for i in range(n)], ("a", "b", "c", "d"))


def _config(**joint_fields):
  c = default.get_base_config()
  c.model.input_size = SIZE
  c.train.eval_batch_size = 16
  c.joint.update(dict(steps=6, window=4, batch_size=8, learning_rate=0.05, log_every=2,
                      eval_every=100, checkpoint_every=2))
  c.joint.update(joint_fields)
  c.lock()
  return c


def _random_crf(d, seed):
  rs = np.random.RandomState(seed)
  f = lambda *s: jnp.asarray(rs.normal(0, 0.5, s), jnp.float32)
  return crf.CRFParams(weights=f(d, K), bias=f(K), transitions=f(K, K), start=f(K), end=f(K))


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


# --- The loss.

def _brute_force_nll(p, x, tags, length, first, last):
  """-log p(tags | window) by enumerating all K^length label paths, in float64."""
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), p)
  u = x[:length].astype(np.float64) @ p.weights + p.bias

  def score(y):
    s = sum(u[t, y[t]] for t in range(length))
    s += sum(p.transitions[y[t - 1], y[t]] for t in range(1, length))
    return s + (p.start[y[0]] if first else 0.0) + (p.end[y[-1]] if last else 0.0)

  scores = np.array([score(y) for y in itertools.product(range(K), repeat=length)])
  log_z = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
  return log_z - score(tags[:length])


def test_window_nll_is_the_crf_likelihood_of_the_window():
  rs = np.random.RandomState(0)
  p = _random_crf(3, seed=1)
  w = 4
  lengths = np.array([4, 4, 4, 4, 2, 1])
  first = np.array([True, False, True, False, True, False])
  last = np.array([False, True, True, False, True, True])
  mask = np.arange(w)[None] < lengths[:, None]
  x = rs.normal(size=(6, w, 3)).astype(np.float32)
  tags = np.where(mask, rs.randint(0, K, (6, w)), 0).astype(np.int32)
  got = np.asarray(joint.window_nll(p, jnp.asarray(x), tags, mask, first, last))
  want = [_brute_force_nll(p, x[b], tags[b], lengths[b], first[b], last[b]) for b in range(6)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # A window holding a whole sequence is the sequence's likelihood (start and end both used).
  whole = -crf.log_likelihood(p.unaries(x[2:3]), tags[2:3], p.transitions, mask[2:3],
                              start=p.start, end=p.end)
  np.testing.assert_allclose(got[2], np.asarray(whole)[0], rtol=1e-6)


def _window_batch(seqs, window, n, seed=0, extra=None):
  return next(pipeline.window_batches(seqs, window, n, seed=seed, extra=extra))


def _objective_loss(objective, steps, params, batch_stats, batch):
  def loss_fn(p):
    loss, metrics, new_stats = objective.loss(steps.apply, p, batch_stats, batch, None)
    return loss, (metrics, new_stats)

  (loss, (metrics, new_stats)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return loss, metrics, new_stats, grads


def test_loss_gradients_reach_cnn_and_crf_and_padding_has_no_effect(tiny_net):
  seqs = _seqs(6, seed=2, min_len=2, max_len=7)
  extra = [np.random.RandomState(i).normal(size=(len(l), 2)).astype(np.float32)
           for i, l in enumerate(seqs.labels)]
  model = _TinyNet(K, nnx.Rngs(0))
  crf_input = joint.CRFInput(keys=("logits", "features"), mean=np.full(K + 16 + 2, 0.1),
                             std=np.full(K + 16 + 2, 2.0))
  objective = joint.make_objective(crf_input, val_seqs=seqs, val_extra=extra, ce_weight=0.5,
                                   prior_scale=0.01, window=5)
  steps = train.Steps(model, None, train.make_mesh(jax.devices()[:1]), SIZE, objective=objective)
  cnn, stats = train._weights(model)
  params = {"cnn": cnn, "crf": joint._crf_dict(_random_crf(K + 16 + 2, seed=3))}
  batch = _window_batch(seqs, 5, 8, extra=extra)
  assert (~batch["mask"]).any()  # Some windows are padded (sequences shorter than 5).
  loss, metrics, new_stats, grads = _objective_loss(objective, steps, params, stats, batch)
  for part in ("cnn", "crf"):
    assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads[part])), part
  _assert_trees_close(new_stats, stats, rtol=0, atol=0)  # Frozen BatchNorm.
  # The loss by hand: window NLL per real frame + 0.5 * cross-entropy + prior.
  out = model(models.preprocess(jnp.asarray(batch["image"].reshape(-1, SIZE, SIZE, 3)), SIZE))
  outs = {k: v.reshape(8, 5, -1) for k, v in out.items()}
  x = crf_input(outs, jnp.asarray(batch["extra"]))
  p = crf.CRFParams(**params["crf"])
  frames = batch["mask"].sum()
  nll = joint.window_nll(p, x, batch["label"], batch["mask"], batch["first"], batch["last"])
  logp = jax.nn.log_softmax(outs["logits"])
  ce = -np.take_along_axis(np.asarray(logp), batch["label"][..., None], -1)[..., 0]
  prior = 0.01 * sum(np.sum(np.square(v)) for v in params["crf"].values())
  want = float(np.sum(nll)) / frames + 0.5 * ce[batch["mask"]].sum() / frames + prior
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # Padded frames: other images, labels and extra inputs change nothing.
  noisy = dict(batch)
  pad = ~batch["mask"]
  rs = np.random.RandomState(9)
  noise = rs.randint(0, 256, batch["image"].shape)
  noisy["image"] = np.where(pad[..., None, None, None], noise, batch["image"]).astype(np.uint8)
  noisy["label"] = np.where(pad, rs.randint(0, K, pad.shape), batch["label"]).astype(np.int32)
  noisy["extra"] = np.where(pad[..., None], 1e3, batch["extra"]).astype(np.float32)
  loss2, metrics2, _, grads2 = _objective_loss(objective, steps, params, stats, noisy)
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
  np.testing.assert_allclose(float(metrics2["accuracy"]), float(metrics["accuracy"]))
  _assert_trees_close(grads2, grads, rtol=1e-5, atol=1e-7)


# --- Window batches.

def test_window_batches_are_windows_deterministic_and_cover_every_window():
  seqs = _seqs(5, seed=4, min_len=2, max_len=8)
  w, b = 4, 6
  lengths = [len(l) for l in seqs.labels]
  starts = {(i, t) for i, n in enumerate(lengths) for t in range(max(n - w + 1, 1))}
  batches = pipeline.window_batches(seqs, w, b, seed=7)
  seen = []
  for step in range(int(np.ceil(len(starts) / b))):
    batch = next(batches)
    assert batch["image"].shape == (b, w, SIZE, SIZE, 3) and batch["label"].dtype == np.int32
    for row in range(b):
      m = batch["mask"][row]
      n = int(m.sum())
      assert m[:n].all() and not m[n:].any() and n >= 1
      # Which sequence and start: the frames are a consecutive slice of exactly one sequence.
      hits = [(i, t) for i, t in starts if np.array_equal(seqs.frames[i][t:t + n],
                                                          batch["image"][row, :n])]
      assert len(hits) == 1
      i, t = hits[0]
      assert n == min(w, lengths[i] - t)
      np.testing.assert_array_equal(batch["label"][row, :n], seqs.labels[i][t:t + n])
      assert not batch["image"][row, n:].any() and not batch["label"][row, n:].any()
      assert batch["first"][row] == (t == 0) and batch["last"][row] == (t + n == lengths[i])
      seen.append((step * b + row, (i, t)))
  first_epoch = [s for pos, s in seen if pos < len(starts)]
  assert sorted(first_epoch) == sorted(starts)  # Every window once per epoch.
  # Resume: the batch of step s depends on (seed, s) only; hosts take slices of the global batch.
  again = pipeline.window_batches(seqs, w, b, seed=7, start_step=2)
  whole = list(itertools.islice(pipeline.window_batches(seqs, w, b, seed=7), 4))[2:]
  for want in whole:
    got = next(again)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  hosts = [next(pipeline.window_batches(seqs, w, b, seed=7, start_step=2, process_index=p,
                                        process_count=3)) for p in range(3)]
  for k in whole[0]:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in hosts]), whole[0][k])
  other = next(pipeline.window_batches(seqs, w, b, seed=8, start_step=2))
  assert not np.array_equal(other["image"], whole[0]["image"])


def test_window_augmentation_is_one_draw_per_window():
  still = _seqs(4, seed=5, min_len=2, max_len=6)
  still = pipeline.Sequences([np.repeat(f[:1], len(f), axis=0) for f in still.frames], still.labels,
                             still.subjects, still.names, still.class_names)  # Frozen faces.
  augment = default.get_base_config().data.augment
  batch = next(pipeline.window_batches(still, 4, 8, seed=1, start_step=3, augment=augment))
  plain = next(pipeline.window_batches(still, 4, 8, seed=1, start_step=3))
  np.testing.assert_array_equal(batch["mask"], plain["mask"])
  changed = 0
  for image, mask, raw in zip(batch["image"], batch["mask"], plain["image"]):
    assert all(np.array_equal(frame, image[0]) for frame in image[mask])  # One draw per window.
    assert not image[~mask].any()  # Padding stays zeros.
    changed += not np.array_equal(image[0], raw[0])
  assert changed >= 6


# --- The loop: data parallel, resumable, and it learns.

def _train(config, workdir, tr, va, model, p, mesh=None):
  return joint.train_joint(config, str(workdir), model=model, crf_params=p, sigma2=10.0,
                           train_seqs=tr, val_seqs=va, num_classes=K, seed=0, mesh=mesh)


def test_sharded_step_equals_single_device_and_bn_stays_frozen(tiny_net, tmp_path):
  tr, va = _seqs(8, seed=0), _seqs(3, seed=1)
  config = _config(steps=3, checkpoint_every=100)
  runs = {}
  for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
    model = _TinyNet(K, nnx.Rngs(0))
    runs[name] = _train(config, tmp_path / name, tr, va, model, _random_crf(K, 5),
                        mesh=train.make_mesh(devices))
  one, eight = runs["one"], runs["eight"]
  start = _TinyNet(K, nnx.Rngs(0))
  assert not np.allclose(_params(one.model)["fc2"]["kernel"], _params(start)["fc2"]["kernel"])
  assert not np.allclose(one.crf_params.transitions, _random_crf(K, 5).transitions)
  _assert_trees_close(train._weights(one.model), train._weights(eight.model), rtol=1e-5, atol=1e-6)
  _assert_trees_close(one.crf_params, eight.crf_params, rtol=1e-5, atol=1e-6)
  _assert_trees_close(nnx.to_pure_dict(nnx.state(one.model, nnx.BatchStat)),
                      nnx.to_pure_dict(nnx.state(start, nnx.BatchStat)), rtol=0, atol=0)


def test_kill_and_resume_matches_uninterrupted_run(tiny_net, tmp_path, monkeypatch):
  tr, va = _seqs(8, seed=0), _seqs(3, seed=1)
  config = _config(steps=8, eval_every=4, checkpoint_every=2)
  real = pipeline.window_batches
  fail_at = {"step": None}

  def killable(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real(*args, start_step=start_step, **kwargs), start_step):
      if step == fail_at["step"]:
        raise RuntimeError(f"killed at step {step}")
      yield batch

  monkeypatch.setattr(pipeline, "window_batches", killable)
  whole = _train(config, tmp_path / "whole", tr, va, _TinyNet(K, nnx.Rngs(0)), _random_crf(K, 5))
  fail_at["step"] = 5
  with pytest.raises(RuntimeError, match="killed at step 5"):
    _train(config, tmp_path / "part", tr, va, _TinyNet(K, nnx.Rngs(0)), _random_crf(K, 5))
  fail_at["step"] = None
  resumed = _train(config, tmp_path / "part", tr, va, _TinyNet(K, nnx.Rngs(0)), _random_crf(K, 5))
  target = {"params": {"cnn": _params(_TinyNet(K, nnx.Rngs(0))),
                       "crf": joint._crf_dict(_random_crf(K, 5))}}
  latest = {}
  for name in ("whole", "part"):
    ckpt = checkpoint_lib.Checkpointer(os.path.join(tmp_path, name, "checkpoints"))
    assert ckpt.all_steps() == [4, 6, 8]
    latest[name] = ckpt.restore(8, target, partial=True)
    ckpt.close()
  _assert_trees_close(latest["whole"], latest["part"], rtol=1e-6, atol=1e-7)
  assert [(r["step"], r["kind"]) for r in resumed.history] == [
      (r["step"], r["kind"]) for r in whole.history]
  np.testing.assert_allclose([r["loss"] for r in resumed.history],
                             [r["loss"] for r in whole.history], rtol=1e-5)
  assert resumed.best_step == whole.best_step
  _assert_trees_close(resumed.crf_params, whole.crf_params, rtol=1e-6, atol=1e-7)


def _training_objective(model, p, seqs, window):
  """Mean window NLL per frame over every training window (one epoch), eval-mode CNN."""
  n = sum(max(len(l) - window + 1, 1) for l in seqs.labels)
  batch = _window_batch(seqs, window, n)
  out = model(models.preprocess(jnp.asarray(batch["image"].reshape(-1, SIZE, SIZE, 3)), SIZE))
  x = out["logits"].reshape(n, window, -1)
  nll = joint.window_nll(p, x, batch["label"], batch["mask"], batch["first"], batch["last"])
  return float(jnp.sum(nll)) / batch["mask"].sum()


def test_joint_fine_tuning_improves_the_training_objective_and_labels(tiny_net, tmp_path):
  tr, va = _seqs(10, seed=0), _seqs(4, seed=1)
  config = _config(steps=24, window=4, learning_rate=0.05, eval_every=8, checkpoint_every=8)
  model = _TinyNet(K, nnx.Rngs(0))
  p = _random_crf(K, 5)
  before = _training_objective(model, p, tr, 4)
  res = _train(config, tmp_path, tr, va, _TinyNet(K, nnx.Rngs(0)), p)
  after = _training_objective(res.model, res.crf_params, tr, 4)
  assert after < 0.8 * before
  evals = [r for r in res.history if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [0, 8, 16, 24]
  assert res.best_val_accuracy == max(r["accuracy"] for r in evals)
  # predict_tags: Viterbi on whole sequences, as crf.predict on the model's outputs.
  tags, mask = joint.predict_tags(res.model, res.crf_params, config, va)
  x, true, want_mask = joint.sequence_inputs(
      joint.CRFInput(), train.predict_batches(res.model, config, pipeline.eval_batches(va, 16)), va)
  np.testing.assert_array_equal(mask, want_mask)
  np.testing.assert_array_equal(tags, np.asarray(crf.predict(res.crf_params, x, mask)))
  accuracy = float(((tags == true) & mask).sum() / mask.sum())
  assert accuracy == pytest.approx(res.best_val_accuracy)  # Best step's validation score.
