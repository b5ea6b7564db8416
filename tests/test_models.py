"""Tests of fer_jax/models: shapes, derived parameter counts, structure, training behaviour."""
import glob
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import default
from fer_jax import models
from fer_jax.models import inception_resnet as ir

NUM_CLASSES = 7
# Cheaper XLA compiles for the tiny CPU models (as flax examples/imagenet/train_test.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(fn, **kwargs):
  return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


def _apply(graphdef, state, images, train):
  """Pure forward: (outputs, new state) of nnx.merge(graphdef, state)(images, train)."""
  model = nnx.merge(graphdef, state)
  return model(images, train=train), nnx.state(model)


def _model_config(**overrides):
  config = default.get_config()
  with config.unlocked():
    for k, v in overrides.items():
      config.model[k] = v
  return config.model


TINY = dict(input_size=75, width=0.125, fc1_width=32)


# --- An independent walk over the paper's figures: the list of convs (kh, kw, c_in, c_out). ---
def _paper_convs(width, repeats):
  """Convs of the network as (kh, kw, c_in, c_out), from Szegedy et al. 2016 figs 3, 16, 7, 17, 18, 19."""
  r = lambda c: max(1, int(round(c * width)))  # noqa: E731
  convs = []

  def chain(c_in, layers):  # layers: (kh, kw, c_out) in sequence; returns the chain's c_out.
    for kh, kw, c_out in layers:
      convs.append((kh, kw, c_in, r(c_out)))
      c_in = r(c_out)
    return c_in

  # Fig. 3, Inception-v4 stem: 3x3/2 32 V, 3x3 32 V, 3x3 64; [maxpool | 3x3/2 96 V];
  # [1x1 64, 3x3 96 V | 1x1 64, 7x1 64, 1x7 64, 3x3 96 V]; [3x3/2 192 V | maxpool].
  c = chain(3, [(3, 3, 32), (3, 3, 32), (3, 3, 64)])
  c = c + chain(c, [(3, 3, 96)])
  c = chain(c, [(1, 1, 64), (3, 3, 96)]) + chain(c, [(1, 1, 64), (7, 1, 64), (1, 7, 64), (3, 3, 96)])
  c = c + chain(c, [(3, 3, 192)])
  stem = c

  def residual(c, branches):
    cat = sum(chain(c, b) for b in branches)
    convs.append((1, 1, cat, c))  # The up-projection matches the trunk.

  for _ in range(repeats[0]):  # Fig. 16.
    residual(c, [[(1, 1, 32)], [(1, 1, 32), (3, 3, 32)], [(1, 1, 32), (3, 3, 48), (3, 3, 64)]])
  c = c + chain(c, [(3, 3, 384)]) + chain(c, [(1, 1, 256), (3, 3, 256), (3, 3, 384)])  # Fig. 7.
  red_a = c
  for _ in range(repeats[1]):  # Fig. 17.
    residual(c, [[(1, 1, 192)], [(1, 1, 128), (1, 7, 160), (7, 1, 192)]])
  c = (c + chain(c, [(1, 1, 256), (3, 3, 384)]) + chain(c, [(1, 1, 256), (3, 3, 288)])  # Fig. 18.
       + chain(c, [(1, 1, 256), (3, 3, 288), (3, 3, 320)]))
  red_b = c
  for _ in range(repeats[2]):  # Fig. 19.
    residual(c, [[(1, 1, 192)], [(1, 1, 192), (1, 3, 224), (3, 1, 256)]])
  return convs, (stem, red_a, red_b)


def _expected_counts(width, repeats, fc1_width, num_classes):
  """(params, batch_stats, num_convs): conv kh*kw*cin*cout + BN 2*cout; FC1, FC2 with biases."""
  convs, (_, _, trunk) = _paper_convs(width, repeats)
  params = sum(kh * kw * ci * co + 2 * co for kh, kw, ci, co in convs)
  params += trunk * fc1_width + fc1_width + fc1_width * num_classes + num_classes
  stats = sum(2 * co for *_, co in convs)
  return params, stats, len(convs)


def _abstract(model_config, num_classes=NUM_CLASSES):
  return nnx.eval_shape(lambda: models.create_model(model_config, num_classes, nnx.Rngs(0)))


def _count(model, kind):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, kind)))


def test_paper_channels_from_the_issue():
  # The walker itself reproduces the issue's totals: 384, 1152 = 384*3, 2144 = 1152+384+288+320.
  assert _paper_convs(1.0, (1, 1, 1))[1] == (384, 1152, 2144)


def test_grid_sizes_at_299():
  model = _abstract(_model_config())
  graphdef, state = nnx.split(model)
  maps = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).feature_maps(x), state,
                        jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32))
  assert maps["stem"].shape == (2, 35, 35, 384)
  assert maps["block_a"].shape == (2, 35, 35, 384)
  assert maps["reduction_a"].shape == (2, 17, 17, 1152)
  assert maps["block_b"].shape == (2, 17, 17, 1152)
  assert maps["reduction_b"].shape == (2, 8, 8, 2144)
  assert maps["block_c"].shape == (2, 8, 8, 2144)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                       jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32))
  assert out["logits"].shape == (2, NUM_CLASSES) and out["logits"].dtype == jnp.float32
  assert out["features"].shape == (2, 1024) and out["features"].dtype == jnp.float32


@pytest.mark.parametrize("overrides", [
    dict(),  # The paper network: 1/1/1, width 1, fc1 1024.
    dict(repeats=(5, 10, 5)),  # Full Inception-ResNet-v2 depth.
    TINY,  # The tiny CPU variant used by tests and the demo.
    dict(input_size=75, width=0.25, repeats=(2, 1, 1), fc1_width=48),
], ids=["paper", "v2_5_10_5", "tiny", "tiny_w0.25"])
def test_param_counts_match_the_figures(overrides):
  model_config = _model_config(**overrides)
  model = _abstract(model_config)
  params, stats, num_convs = _expected_counts(model_config.width, model_config.repeats,
                                              model_config.fc1_width, NUM_CLASSES)
  assert models.param_count(model) == _count(model, nnx.Param) == params
  assert _count(model, nnx.BatchStat) == stats
  convs = [n for _, n in nnx.iter_graph(model) if isinstance(n, nnx.Conv)]
  assert len(convs) == num_convs


SHIPPED_CONFIGS = ["default", "demo", "demo:smoke", "ck_plus", "ck_plus:tiny", "mmi", "mmi:tiny",
                   "fera", "fera:tiny", "cross_db:ck_plus", "cross_db:mmi,tiny"]


def test_every_config_file_is_pinned():
  config_dir = os.path.dirname(default.__file__)
  files = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(f"{config_dir}/*.py")}
  assert files - {"__init__"} == {name.split(":")[0] for name in SHIPPED_CONFIGS}


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_builds_with_the_derived_count(name):
  module, _, arg = name.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg or None)
  model = _abstract(config.model)
  params, _, _ = _expected_counts(config.model.width, config.model.repeats,
                                  config.model.fc1_width, NUM_CLASSES)
  assert models.param_count(model) == params


def test_every_conv_has_batchnorm_no_bias_and_two_linears():
  model = _abstract(_model_config(repeats=(2, 2, 2)))
  nodes = [n for _, n in nnx.iter_graph(model)]
  convs = [n for n in nodes if isinstance(n, nnx.Conv)]
  bns = [n for n in nodes if isinstance(n, nnx.BatchNorm)]
  assert len(convs) == len(bns) > 0
  assert all(c.bias is None for c in convs)
  # Every ConvBN pairs a conv with a BN of the conv's width.
  pairs = [n for n in nodes if isinstance(n, ir.ConvBN)]
  assert len(pairs) == len(convs)
  assert all(p.bn.scale.shape == (p.conv.kernel.shape[-1],) for p in pairs)
  linears = [n for n in nodes if isinstance(n, nnx.Linear)]
  assert sorted(map(id, linears)) == sorted([id(model.fc1), id(model.fc2)])


def _tiny_model(seed=0, num_classes=4, **overrides):
  """The tiny variant; the same overrides share one compiled parameter init."""
  return models.create_model(_model_config(**{**TINY, **overrides}), num_classes, nnx.Rngs(seed))


def test_residual_sum_is_linear_then_relu():
  # With the up-projection's BN set to scale 0 and bias b, an IR-A block returns relu(x + 0.17 b):
  # no ReLU between that BN and the sum, and the residual scale of fig. 16.
  block = _tiny_model().blocks_a[0]
  c = block.out_channels
  block.up.bn.scale[...] = jnp.zeros(c)
  b = jnp.linspace(-3.0, 3.0, c)
  block.up.bn.bias[...] = b
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 7, c)), jnp.float32)
  graphdef, state = nnx.split(block)
  y = _jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))(state, x)
  np.testing.assert_allclose(y, np.maximum(x + 0.17 * b, 0.0), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 9, 11, 3), (3, 7, 7, 5), (2, 4, 3, 1)])
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_max_pool_matches_reduce_window(shape, values):
  # The separable pool against XLA's own 3x3/2 VALID max pool (reduce_window, whose gradient is
  # select_and_scatter: first maximum of each window in row-major order). Values exact; gradients:
  # every window's cotangent lands on the same input position (checked one window at a time, so a
  # wrong winner cannot hide in a sum), and with all windows at once agree to summation order.
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape) if values == "normal" else rng.integers(0, 2, shape)
  x = x.astype(np.float32)

  def ref(a):
    return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")

  want, ref_vjp = jax.vjp(ref, x)
  got, vjp = jax.vjp(ir._max_pool, x)  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, want)
  assert got.shape == (shape[0], (shape[1] - 3) // 2 + 1, (shape[2] - 3) // 2 + 1, shape[3])
  for index in np.ndindex(*want.shape):
    g = np.zeros(want.shape, np.float32)
    g[index] = 1.0
    np.testing.assert_array_equal(vjp(g)[0], ref_vjp(g)[0], err_msg=str(index))
  g = rng.normal(size=want.shape).astype(np.float32)
  np.testing.assert_allclose(vjp(g)[0], ref_vjp(g)[0], rtol=1e-6, atol=1e-6)


def test_tiny_model_overfits_a_small_batch():
  model = _tiny_model()  # Dropout 0.2 stays on.
  optimizer = nnx.Optimizer(model, optax.sgd(0.02, momentum=0.9), wrt=nnx.Param)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (16, 75, 75, 3)), jnp.float32)
  labels = jnp.asarray(np.arange(16) % 4)
  graphdef, state = nnx.split((model, optimizer))

  def step(state):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      logits = model(images, train=True)["logits"]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss, accuracy

  step = _jit(step, donate_argnums=0)
  losses = []
  for _ in range(30):
    state, loss, accuracy = step(state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < 0.05 * losses[0]
  assert float(accuracy) == 1.0  # Training accuracy (train mode) of the last step.


def test_train_mode_uses_batch_stats_and_dropout_eval_is_deterministic():
  model = _tiny_model()  # Dropout 0.2.
  images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, 75, 75, 3)), jnp.float32)
  forward = _jit(_apply, static_argnums=(0, 3))
  graphdef, state = nnx.split(model)
  eval1, state_eval = forward(graphdef, state, images, False)
  eval2, _ = forward(graphdef, state_eval, images, False)
  np.testing.assert_array_equal(eval1["logits"], eval2["logits"])
  stats = lambda s: jax.tree.leaves(nnx.filter_state(s, nnx.BatchStat))  # noqa: E731
  for before, after in zip(stats(state), stats(state_eval)):
    np.testing.assert_array_equal(before, after)
  train1, state_train = forward(graphdef, state, images, True)
  moved = [not np.allclose(a, b) for a, b in zip(stats(state), stats(state_train))]
  assert moved and all(moved)  # Every running mean and variance moved.
  train2, _ = forward(graphdef, state_train, images, True)
  assert not np.allclose(train1["logits"], eval1["logits"])
  assert not np.allclose(train1["features"], train2["features"])  # A fresh dropout mask.


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  # The float32 tiny model's parameters in the bfloat16 model's graph (same shapes; saves an init).
  graphdef = nnx.graphdef(_abstract(_model_config(**TINY, dtype="bfloat16"), 4))
  model = nnx.merge(graphdef, nnx.state(_tiny_model()))
  assert model.stem.convs.layers[0].conv.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  images = jnp.zeros((2, 75, 75, 3), jnp.float32)
  graphdef, state = nnx.split(model)
  maps, out = _jit(lambda s, x: (nnx.merge(graphdef, s).feature_maps(x)["stem"],
                                 nnx.merge(graphdef, s)(x)))(state, images)
  assert maps.dtype == jnp.bfloat16
  assert out["logits"].dtype == jnp.float32 and out["features"].dtype == jnp.float32
  assert out["logits"].shape == (2, 4) and np.isfinite(out["logits"]).all()


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="input_size=74"):
    models.create_model(_model_config(input_size=74, width=0.125), 4, nnx.Rngs(0))
  with pytest.raises(ValueError, match="dtype"):
    models.create_model(_model_config(dtype="float16"), 4, nnx.Rngs(0))
  assert ir.min_grid_sizes(75) == {"stem": 7, "reduction_a": 3, "reduction_b": 1}
  assert ir.min_grid_sizes(299) == {"stem": 35, "reduction_a": 17, "reduction_b": 8}
  model = _abstract(_model_config(**TINY), 4)
  with pytest.raises(ValueError, match="NHWC"):
    model(jnp.zeros((75, 75, 3)))
  with pytest.raises(ValueError, match="input_size"):
    model(jnp.zeros((1, 80, 80, 3)))
  with pytest.raises(ValueError, match="uint8"):
    models.preprocess(jnp.zeros((1, 75, 75, 3), jnp.float32), 75)
  with pytest.raises(ValueError, match="square"):
    models.preprocess(jnp.zeros((1, 75, 70, 3), jnp.uint8), 75)


def test_preprocess_scales_and_resizes():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 75, 75, 3), dtype=np.uint8)
  out = jax.jit(models.preprocess, static_argnums=1)(images, 75)
  np.testing.assert_allclose(out, images / 127.5 - 1.0, atol=1e-6)  # Same size: no resize.
  const = np.stack([np.zeros((48, 48, 3), np.uint8), np.full((48, 48, 3), 255, np.uint8)])
  out = jax.jit(models.preprocess, static_argnums=1)(const, 75)
  assert out.shape == (2, 75, 75, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(out[0], -1.0, atol=1e-6)  # Constant images stay constant.
  np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
