"""Tests for fer_jax/train.py and fer_jax/checkpoint.py (8 fake CPU devices from conftest).

One run of the real CNN (create_model, tiny config) covers overfitting, the single compile, the
best checkpoint and load_model. The other tests swap in a Conv+BatchNorm+Dropout+
Linear stand-in with the same call contract, which compiles in about a second.
"""
import json
import os
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from fer_jax import checkpoint as checkpoint_lib
from fer_jax import models
from fer_jax import train
from stand_in import TinyNet as _TinyNet
from stand_in import tiny_net  # noqa: F401  (a fixture)

NUM_CLASSES = 4


def _config(size=16, **train_fields):
  c = default.get_base_config()
  c.model.input_size, c.model.width, c.model.repeats, c.model.fc1_width = size, 0.125, (1, 1, 1), 32
  c.train.update(dict(batch_size=8, num_steps=6, learning_rate=0.05, log_every=1, eval_every=3,
                      checkpoint_every=2, lr_decay_every=1000))
  c.train.update(train_fields)
  c.lock()
  return c


def _data(n, size, seed=0, learnable=True):
  """n images uint8 [n, size, size, 3]: class c has its own colour (plus noise) when learnable."""
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, NUM_CLASSES, n).astype(np.int32)
  noise = rs.randint(0, 60, (n, size, size, 3))
  colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
  base = colours[labels][:, None, None, :] if learnable else rs.randint(0, 196, (n, 1, 1, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8), labels


def _train_batches(images, labels, batch_size, fail_at=None):
  def batches(start):
    step = start
    while True:
      if step == fail_at:
        raise RuntimeError(f"killed at step {step}")
      idx = np.random.RandomState(step).choice(len(images), batch_size, replace=False)
      yield {"image": images[idx], "label": labels[idx]}
      step += 1
  return batches


def _eval_batches(images, labels, batch_size):
  """Fixed-size batches; the last one padded with masked garbage rows."""
  def batches():
    for i in range(0, len(images), batch_size):
      im, lb = images[i:i + batch_size], labels[i:i + batch_size]
      pad = batch_size - len(im)
      yield {"image": np.concatenate([im, np.full((pad,) + im.shape[1:], 255, np.uint8)]),
             "label": np.concatenate([lb, np.full(pad, 1, np.int32)]),
             "mask": np.arange(batch_size) < len(im)}
  return batches


def _saved_steps(workdir):
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


# --- The real CNN, trained once for several tests.

@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
  config = _config(size=75, batch_size=8, num_steps=32, eval_every=8, checkpoint_every=8,
                   log_every=4, learning_rate=0.01)
  images, labels = _data(16, 75)
  workdir = str(tmp_path_factory.mktemp("real"))
  result = train.train_and_evaluate(
      config, workdir, num_classes=NUM_CLASSES, train_batches=_train_batches(images, labels, 8),
      eval_batches=_eval_batches(images, labels, 6))
  return config, workdir, result, images, labels


def test_real_model_overfits_with_one_compile(real_run):
  config, workdir, result, _, _ = real_run
  train_records = [r for r in result.history if r["kind"] == "train"]
  evals = [r for r in result.history if r["kind"] == "eval"]
  assert [r["step"] for r in train_records] == list(range(4, 33, 4))
  assert [r["step"] for r in evals] == [8, 16, 24, 32]
  assert train_records[-1]["loss"] < 0.5 * train_records[0]["loss"]
  # Learnt the 4 classes (chance 0.25): at least 12 of 16 validation frames. Not an exact figure:
  # 32 SGD steps amplify any change of summation order (an XLA flag or version, the thread count).
  assert result.best_val_accuracy == max(r["accuracy"] for r in evals) >= 12 / 16
  assert result.train_step_traces == 1
  assert result.final_step == 32
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [4, 8, 8, 12, 16, 16, 20, 24, 24, 28, 32, 32]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (train imported it already)
  events = [os.path.join(workdir, "tensorboard", f)
            for f in os.listdir(os.path.join(workdir, "tensorboard"))]
  scalars = {(v.tag, e.step): float(tf.make_ndarray(v.tensor))
             for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value}
  assert scalars[("eval/accuracy", 32)] == evals[-1]["accuracy"]
  assert scalars[("train/loss", 4)] == pytest.approx(train_records[0]["loss"])
  # Weight decay on the real tree: exactly one kernel per Conv and Linear, nothing else.
  mask = jax.tree_util.tree_leaves_with_path(train.weight_decay_mask(_params(result.model)))
  layers = [m for _, m in nnx.iter_graph(result.model) if isinstance(m, (nnx.Conv, nnx.Linear))]
  assert sum(v for _, v in mask) == len(layers) > 10
  assert all(v == (path[-1].key == "kernel") for path, v in mask)


def test_best_checkpoint_and_load_model(real_run):
  config, workdir, result, _, _ = real_run
  evals = [r for r in result.history if r["kind"] == "eval"]
  first_best = next(r["step"] for r in evals if r["accuracy"] == result.best_val_accuracy)
  assert result.best_step == first_best
  # The rolling checkpoints (every 8 steps, 3 kept) hold that step too: an independent copy.
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.all_steps() == [16, 24, 32]
  assert result.best_step in (16, 24, 32)
  target = dict(zip(("params", "batch_stats"), train._weights(result.model)))
  saved = {step: ckpt.restore(step, target, partial=True) for step in (16, 24, 32)}
  ckpt.close()
  best = train.load_model(config, workdir, NUM_CLASSES)
  _assert_trees_close(_params(best), saved[result.best_step]["params"], rtol=0, atol=0)
  _assert_trees_close(_params(result.model), saved[result.best_step]["params"], rtol=0, atol=0)
  # "latest": exactly the weights and BatchNorm statistics of the last step (32), in eval mode.
  latest = train.load_model(config, workdir, NUM_CLASSES, which="latest")
  params, batch_stats = train._weights(latest)
  _assert_trees_close(params, saved[32]["params"], rtol=0, atol=0)
  _assert_trees_close(batch_stats, saved[32]["batch_stats"], rtol=0, atol=0)
  with pytest.raises(AssertionError):  # Step 24 differs from step 32: the comparison can fail.
    _assert_trees_close(params, saved[24]["params"], rtol=0, atol=0)
  images = models.preprocess(jnp.asarray(real_run[3][:4]), 75)
  np.testing.assert_array_equal(latest(images)["logits"], latest(images)["logits"])  # No dropout.
  with pytest.raises(FileNotFoundError, match="train stage 1"):
    train.load_model(config, os.path.join(workdir, "nothing"), NUM_CLASSES)


# --- Stand-in model.

def test_predict_batches_real_rows_in_order(tiny_net):
  images, labels = _data(13, 16, seed=5, learnable=False)
  model = _TinyNet(NUM_CLASSES, nnx.Rngs(params=2, dropout=2))
  config = _config()
  # Batches of 5 (the last has 3 real rows), padded again to 8 inside for the 8 devices.
  out = train.predict_batches(model, config, _eval_batches(images, labels, 5)())
  direct = model(models.preprocess(jnp.asarray(images), 16), train=False)
  assert out["logits"].shape == (13, NUM_CLASSES) and out["features"].shape == (13, 16)
  assert out["logits"].dtype == out["features"].dtype == np.float32
  np.testing.assert_allclose(out["logits"], direct["logits"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["features"], direct["features"], rtol=1e-5, atol=1e-6)
  # Another model of the same structure reuses the compiled function and gets its own outputs.
  other = _TinyNet(NUM_CLASSES, nnx.Rngs(params=3, dropout=3))
  predict = train._inference_steps(model, train.make_mesh(), 16).predict
  again = train.predict_batches(other, config, _eval_batches(images, labels, 5)())
  np.testing.assert_allclose(
      again["logits"], other(models.preprocess(jnp.asarray(images), 16))["logits"], rtol=1e-5,
      atol=1e-6)
  assert predict._cache_size() == 1


def test_sharded_step_equals_single_device(tiny_net, tmp_path):
  config = _config(num_steps=4, eval_every=100, checkpoint_every=100, batch_size=16)
  images, labels = _data(32, 16, learnable=False)
  runs = {}
  for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
    assert len(devices) == (1 if name == "one" else 8)
    runs[name] = train.train_and_evaluate(
        config, str(tmp_path / name), num_classes=NUM_CLASSES,
        train_batches=_train_batches(images, labels, 16), mesh=train.make_mesh(devices))
  one, eight = (train._weights(runs[k].model) for k in ("one", "eight"))  # Params, batch stats.
  initial = _params(_TinyNet(NUM_CLASSES, nnx.Rngs(params=0, dropout=0)))  # seed 0, as train.
  assert not np.allclose(_params(runs["one"].model)["fc2"]["kernel"], initial["fc2"]["kernel"])
  _assert_trees_close(one, eight, rtol=1e-5, atol=1e-6)


def test_dropout_key_depends_on_the_step_only(tiny_net):
  config = _config()
  model = _TinyNet(NUM_CLASSES, nnx.Rngs(params=0, dropout=0))
  tx = train.make_optimizer(config.train)
  steps = train.Steps(model, tx, train.make_mesh(), 16, train.learning_rate_schedule(config.train))
  images, labels = _data(8, 16, learnable=False)
  batch = steps.global_batch({"image": images, "label": labels}, ("image", "label"), "test")

  def loss_at(step):
    params, batch_stats = steps.replicate(train._weights(model))
    state = {"params": params, "batch_stats": batch_stats, "opt_state": tx.init(params),
             "step": np.int32(step), "rng": jax.random.key_data(jax.random.key(0))}
    return float(steps.train(steps.replicate(state), batch)[1]["loss"])

  assert loss_at(3) == loss_at(3)  # Same step, same dropout mask ...
  assert loss_at(3) != loss_at(4)  # ... another step, another mask (weights are the same).
  assert steps.traces == 1


def test_kill_and_resume_matches_uninterrupted_run(tiny_net, tmp_path):
  images, labels = _data(32, 16, learnable=False)
  eval_batches = _eval_batches(images[:10], labels[:10], 8)

  def run(workdir, num_steps, fail_at=None):
    return train.train_and_evaluate(
        _config(num_steps=num_steps), str(workdir), num_classes=NUM_CLASSES,
        train_batches=_train_batches(images, labels, 8, fail_at), eval_batches=eval_batches)

  whole = run(tmp_path / "whole", 12)
  assert _saved_steps(tmp_path / "whole") == [8, 10, 12]
  part = tmp_path / "part"
  first = run(part, 6)  # Stop after k steps ...
  assert (first.final_step, _saved_steps(part)) == (6, [2, 4, 6])
  with pytest.raises(RuntimeError, match="killed at step 9"):  # ... resume, killed mid-way ...
    run(part, 12, fail_at=9)
  assert _saved_steps(part) == [4, 6, 8]
  resumed = run(part, 12)  # ... and resumed again from step 8.
  assert resumed.train_step_traces == 1 and resumed.final_step == 12
  assert _saved_steps(part) == [8, 10, 12]
  for which in ("latest", "best"):
    _assert_trees_close(
        _params(train.load_model(_config(), str(tmp_path / "whole"), NUM_CLASSES, which)),
        _params(train.load_model(_config(), str(part), NUM_CLASSES, which)), rtol=1e-6, atol=1e-7)
  assert [(r["step"], r["kind"]) for r in resumed.history] == [
      (r["step"], r["kind"]) for r in whole.history]
  np.testing.assert_allclose([r["loss"] for r in resumed.history],
                             [r["loss"] for r in whole.history], rtol=1e-5)
  assert resumed.best_step == whole.best_step
  done = run(part, 12)  # Finished: returns at once.
  assert done.train_step_traces == 0 and done.final_step == 12 and done.best_step == whole.best_step


def test_nan_loss_stops_with_the_step(tiny_net, tmp_path):
  images, labels = _data(16, 16)
  # learning_rate 1e30: the first update leaves huge weights, the next forward pass overflows.
  bad, messages = {}, {}
  for name, every in (("checked_every_step", dict(checkpoint_every=1, log_every=100)),
                      ("checked_at_log", dict(checkpoint_every=100, log_every=6))):
    config = _config(num_steps=12, learning_rate=1e30, eval_every=100, **every)
    with pytest.raises(FloatingPointError, match=r"at step \d+ \(the first bad one of steps") as e:
      train.train_and_evaluate(config, str(tmp_path / name), num_classes=NUM_CLASSES,
                               train_batches=_train_batches(images, labels, 8))
    bad[name] = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    messages[name] = str(e.value)
    assert isinstance(e.value, train.NonFiniteLossError)
  s = bad["checked_at_log"]
  # Step 0 starts from finite weights; its update (lr 1e30) overflows what step 1 computes.
  assert bad["checked_every_step"] == s == 1
  # Checked every step: a window of one step. Checked at logs (steps 6, 12): steps 0..5 hold step 1.
  assert "at step 1 (the first bad one of steps 1..1)" in messages["checked_every_step"]
  assert "at step 1 (the first bad one of steps 0..5)" in messages["checked_at_log"]
  # Checkpoint N holds the state after N updates: only those checked finite were written.
  assert _saved_steps(tmp_path / "checked_every_step") == list(range(1, s + 1))
  assert _saved_steps(tmp_path / "checked_at_log") == []
  ckpt = checkpoint_lib.Checkpointer(tmp_path / "checked_every_step" / "checkpoints")
  model = _TinyNet(NUM_CLASSES, nnx.Rngs(0))
  last = ckpt.restore(s, {"params": _params(model)}, partial=True)
  ckpt.close()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(last))


def test_exact_evaluation_with_padded_last_batch(tiny_net):
  images, labels = _data(21, 16, seed=3, learnable=False)
  model = _TinyNet(NUM_CLASSES, nnx.Rngs(params=1, dropout=1))
  steps = train.Steps(model, None, train.make_mesh(), 16)
  params, batch_stats = steps.replicate(train._weights(model))
  # Batches of 6 (the last has 3 real rows) are padded to 8 for the 8 devices inside evaluate().
  result = train.evaluate(steps, params, batch_stats, _eval_batches(images, labels, 6))
  logits = model(models.preprocess(jnp.asarray(images), 16), train=False)["logits"]
  assert result["count"] == 21
  assert result["accuracy"] == np.mean(np.asarray(logits).argmax(-1) == labels)
  expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)


def test_learning_rate_schedule_and_weight_decay_mask(tiny_net):
  config = _config(lr_decay_every=5, learning_rate=0.01, weight_decay=1e-4)
  schedule = train.learning_rate_schedule(config.train)
  np.testing.assert_allclose([schedule(s) for s in (0, 4, 5, 10)], [0.01, 0.01, 0.001, 1e-4],
                             rtol=1e-6)
  params = _params(_TinyNet(NUM_CLASSES, nnx.Rngs(0)))
  mask = train.weight_decay_mask(params)
  assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False},
                  "fc1": {"kernel": True, "bias": False}, "fc2": {"kernel": True, "bias": False}}
  # Zero gradients: one step moves exactly the kernels, by -lr * wd * w.
  tx = train.make_optimizer(config.train)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    p = params
    for k in path:
      p = p[k.key]
    expected = -0.01 * 1e-4 * p if path[-1].key == "kernel" else np.zeros_like(p)
    np.testing.assert_allclose(u, expected, rtol=1e-6, atol=0)


def test_bad_inputs_raise_clearly(tiny_net, tmp_path):
  images, labels = _data(16, 16)
  with pytest.raises(ValueError, match="divide by the number of devices"):
    train.train_and_evaluate(_config(batch_size=12), str(tmp_path / "a"),
                             num_classes=NUM_CLASSES,
                             train_batches=_train_batches(images, labels, 12))
  with pytest.raises(ValueError, match="expected uint8"):
    train.train_and_evaluate(
        _config(), str(tmp_path / "b"), num_classes=NUM_CLASSES,
        train_batches=lambda s: iter([{"image": images[:8].astype(np.float32),
                                       "label": labels[:8]}]))
