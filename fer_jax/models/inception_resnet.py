"""Inception-ResNet CNN of Hasani & Mahoor (FG 2017) in flax.nnx.

Inception-v4 stem (Szegedy et al. 2016, fig. 3; 299 -> 35x35x384), then Inception-ResNet-v2 blocks:
IR-A (fig. 16, scale 0.17) x repeats[0], Reduction-A (fig. 7, k,l,m,n = 256,256,384,384; -> 17x17x1152),
IR-B (fig. 17, scale 0.10) x repeats[1], Reduction-B (fig. 18; -> 8x8x2144), IR-C (fig. 19, scale 0.20)
x repeats[2], global average pool, dropout, FC1 (ReLU), FC2 (logits, the CRF input).

Every conv has no bias and is followed by BatchNorm (momentum 0.9: short trainings, so the running
statistics catch up within ~20 steps; epsilon 1e-3); ReLU follows every BN except the BN of the 1x1
up-projection of a residual block, whose ReLU comes after the sum x + scale * up(concat(branches)).
Channel counts are the paper's times `width` (rounded, >= 1); the up-projection always matches the
trunk. Images are NHWC float32 in [-1, 1] (see `preprocess`).
"""
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

BN_MOMENTUM = 0.9  # Flax/Keras use 0.99; 0.9 (PyTorch's 0.1) suits the short CPU trainings.
BN_EPSILON = 1e-3  # As tf-slim / Keras inception_resnet_v2.
MIN_INPUT_SIZE = 75  # 75 -> stem 7 -> Reduction-A 3 -> Reduction-B 1.
# Compute dtypes. float64 (with jax_enable_x64) is the reference of the numerics test only.
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")  # He, for ReLU.


def _valid_out(size: int, k: int = 3, s: int = 2) -> int:
  return (size - k) // s + 1


def min_grid_sizes(input_size: int) -> dict[str, int]:
  """Spatial side after the stem, Reduction-A and Reduction-B for a square input."""
  s = _valid_out(_valid_out(input_size), 3, 1)  # Conv 3x3/2 V, conv 3x3 V (the SAME conv keeps it).
  s = _valid_out(_valid_out(s), 3, 1)  # Mixed 3a (3x3/2 V), mixed 4a (3x3 V).
  stem = _valid_out(s)  # Mixed 5a (3x3/2 V).
  red_a = _valid_out(stem)
  return {"stem": stem, "reduction_a": red_a, "reduction_b": _valid_out(red_a)}


class ConvBN(nnx.Module):
  """Conv (no bias) -> BatchNorm -> optional ReLU. [B, H, W, C_in] -> [B, H', W', C_out]."""

  def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], *, strides: int = 1,
               padding: str = "SAME", relu: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    self.conv = nnx.Conv(c_in, c_out, kernel, strides=strides, padding=padding, use_bias=False,
                         kernel_init=_CONV_INIT, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.bn = nnx.BatchNorm(c_out, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype,
                            param_dtype=jnp.float32, rngs=rngs)
    self.relu = relu
    self.out_channels = c_out

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.bn(self.conv(x), use_running_average=not train)
    return nnx.relu(x) if self.relu else x


class Chain(nnx.Module):
  """ConvBN layers in sequence; `specs` are (c_out, kernel, strides, padding)."""

  def __init__(self, c_in: int, specs: Sequence[tuple], *, dtype, rngs: nnx.Rngs):
    layers = []
    for c_out, kernel, strides, padding in specs:
      layers.append(ConvBN(c_in, c_out, kernel, strides=strides, padding=padding, dtype=dtype,
                           rngs=rngs))
      c_in = c_out
    self.layers = nnx.List(layers)
    self.out_channels = c_in

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for layer in self.layers:
      x = layer(x, train)
    return x


def _pool_windows(x: jax.Array) -> list[tuple[int, int, jax.Array]]:
  """The 9 taps (i, j, x[:, i::2, j::2]) of a 3x3/2 VALID pool, each [B, H', W', C], row-major."""
  b, h, w, c = x.shape
  oh, ow = _valid_out(h), _valid_out(w)
  return [(i, j, jax.lax.slice(x, (0, i, j, 0), (b, i + 2 * oh - 1, j + 2 * ow - 1, c),
                               (1, 2, 2, 1)))
          for i in range(3) for j in range(3)]


@jax.custom_vjp
def _max_pool(x: jax.Array) -> jax.Array:
  """Max pool 3x3/2 VALID: [B, H, W, C] -> [B, (H - 3) // 2 + 1, (W - 3) // 2 + 1, C].

  Same values and gradient as lax.reduce_window max (the gradient goes to the first maximum of each
  window in row-major order, as XLA's select_and_scatter), written as 9 strided slices: XLA CPU
  expands select_and_scatter into iotas, a variadic reduce_window and a scatter (~6x slower than
  these fused elementwise maxima, selects and pads; ~8% of the CPU train step).
  """
  return functools.reduce(jnp.maximum, [tap for _, _, tap in _pool_windows(x)])


def _max_pool_fwd(x):
  return _max_pool(x), x


def _max_pool_bwd(x, g):
  # The argmax is found from the taps alone, not by equality with the forward's output: XLA may
  # fuse x's producer (e.g. relu(x + scale * up)) into both and round them differently (FMA).
  taps = _pool_windows(x)
  best, arg = taps[0][2], jnp.zeros(g.shape, jnp.int8)
  for k, (_, _, tap) in enumerate(taps[1:], 1):
    better = tap > best  # Strict: the first maximum wins ties.
    best, arg = jnp.where(better, tap, best), jnp.where(better, jnp.int8(k), arg)
  zero = jnp.zeros((), g.dtype)
  dx = None
  for k, (i, j, _) in enumerate(taps):
    grad = jax.lax.pad(jnp.where(arg == k, g, zero), zero,
                       ((0, 0, 0), (i, x.shape[1] - i - 2 * g.shape[1] + 1, 1),
                        (j, x.shape[2] - j - 2 * g.shape[2] + 1, 1), (0, 0, 0)))
    dx = grad if dx is None else dx + grad
  return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


class Stem(nnx.Module):
  """Inception-v4 stem (fig. 3): [B, 299, 299, 3] -> [B, 35, 35, 384 w]."""

  def __init__(self, ch, *, dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.convs = Chain(3, [(ch(32), 3, 2, "VALID"), (ch(32), 3, 1, "VALID"), (ch(64), 3, 1, "SAME")],
                       **kw)
    c = self.convs.out_channels
    self.mixed_3a = ConvBN(c, ch(96), 3, strides=2, padding="VALID", **kw)  # Beside a max pool.
    c += ch(96)
    self.mixed_4a_0 = Chain(c, [(ch(64), 1, 1, "SAME"), (ch(96), 3, 1, "VALID")], **kw)
    self.mixed_4a_1 = Chain(c, [(ch(64), 1, 1, "SAME"), (ch(64), (7, 1), 1, "SAME"),
                                (ch(64), (1, 7), 1, "SAME"), (ch(96), 3, 1, "VALID")], **kw)
    c = 2 * ch(96)
    self.mixed_5a = ConvBN(c, ch(192), 3, strides=2, padding="VALID", **kw)  # Beside a max pool.
    self.out_channels = c + ch(192)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.convs(x, train)
    x = jnp.concatenate([_max_pool(x), self.mixed_3a(x, train)], axis=-1)
    x = jnp.concatenate([self.mixed_4a_0(x, train), self.mixed_4a_1(x, train)], axis=-1)
    return jnp.concatenate([self.mixed_5a(x, train), _max_pool(x)], axis=-1)


class ResidualBlock(nnx.Module):
  """Inception-ResNet block: relu(x + scale * BN(conv1x1(concat(branches)))); shape-preserving."""

  def __init__(self, c: int, branches: Sequence[Sequence[tuple]], scale: float, *, dtype,
               rngs: nnx.Rngs):
    self.branches = nnx.List([Chain(c, spec, dtype=dtype, rngs=rngs) for spec in branches])
    c_cat = sum(b.out_channels for b in self.branches)
    self.up = ConvBN(c_cat, c, 1, relu=False, dtype=dtype, rngs=rngs)
    self.scale = scale
    self.out_channels = c

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = jnp.concatenate([b(x, train) for b in self.branches], axis=-1)
    return nnx.relu(x + self.scale * self.up(y, train))


class Reduction(nnx.Module):
  """Reduction block: concat(max pool 3x3/2 V, conv branches ending 3x3/2 V); side (s - 3) // 2 + 1."""

  def __init__(self, c: int, branches: Sequence[Sequence[tuple]], *, dtype, rngs: nnx.Rngs):
    self.branches = nnx.List([Chain(c, spec, dtype=dtype, rngs=rngs) for spec in branches])
    self.out_channels = c + sum(b.out_channels for b in self.branches)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return jnp.concatenate([_max_pool(x)] + [b(x, train) for b in self.branches], axis=-1)


def block_a(c, ch, **kw):  # Fig. 16 (Inception-ResNet-v2 A).
  return ResidualBlock(c, [[(ch(32), 1, 1, "SAME")],
                           [(ch(32), 1, 1, "SAME"), (ch(32), 3, 1, "SAME")],
                           [(ch(32), 1, 1, "SAME"), (ch(48), 3, 1, "SAME"), (ch(64), 3, 1, "SAME")]],
                       0.17, **kw)


def reduction_a(c, ch, **kw):  # Fig. 7 with k, l, m, n = 256, 256, 384, 384.
  return Reduction(c, [[(ch(384), 3, 2, "VALID")],
                       [(ch(256), 1, 1, "SAME"), (ch(256), 3, 1, "SAME"), (ch(384), 3, 2, "VALID")]],
                   **kw)


def block_b(c, ch, **kw):  # Fig. 17 (Inception-ResNet-v2 B).
  return ResidualBlock(c, [[(ch(192), 1, 1, "SAME")],
                           [(ch(128), 1, 1, "SAME"), (ch(160), (1, 7), 1, "SAME"),
                            (ch(192), (7, 1), 1, "SAME")]],
                       0.10, **kw)


def reduction_b(c, ch, **kw):  # Fig. 18 (Inception-ResNet-v2 Reduction-B).
  return Reduction(c, [[(ch(256), 1, 1, "SAME"), (ch(384), 3, 2, "VALID")],
                       [(ch(256), 1, 1, "SAME"), (ch(288), 3, 2, "VALID")],
                       [(ch(256), 1, 1, "SAME"), (ch(288), 3, 1, "SAME"), (ch(320), 3, 2, "VALID")]],
                   **kw)


def block_c(c, ch, **kw):  # Fig. 19 (Inception-ResNet-v2 C).
  return ResidualBlock(c, [[(ch(192), 1, 1, "SAME")],
                           [(ch(192), 1, 1, "SAME"), (ch(224), (1, 3), 1, "SAME"),
                            (ch(256), (3, 1), 1, "SAME")]],
                       0.20, **kw)


class InceptionResNet(nnx.Module):
  """The paper's CNN. Call: images [B, S, S, 3] float32 in [-1, 1] ->
  {"logits": [B, num_classes] float32 (FC2), "features": [B, fc1_width] float32 (FC1 after ReLU)};
  float64 outputs for dtype="float64" (the numerics reference, with jax_enable_x64)."""

  def __init__(self, num_classes: int, *, input_size: int = 299, width: float = 1.0,
               repeats: Sequence[int] = (1, 1, 1), fc1_width: int = 1024, dropout: float = 0.2,
               dtype: str = "float32", rngs: nnx.Rngs):
    if int(input_size) < MIN_INPUT_SIZE:
      raise ValueError(f"model.input_size={input_size} is too small: the network needs >= "
                       f"{MIN_INPUT_SIZE} (75 -> stem 7 -> Reduction-A 3 -> Reduction-B 1).")
    if not width > 0:
      raise ValueError(f"model.width={width} must be > 0 (1.0 is the paper's network).")
    if len(repeats) != 3 or any(int(r) < 0 for r in repeats):
      raise ValueError(f"model.repeats={repeats} must be three counts >= 0 (A, B, C blocks).")
    if dtype not in _DTYPES:
      raise ValueError(f"model.dtype={dtype!r} must be one of {sorted(_DTYPES)}.")
    if int(num_classes) < 1 or int(fc1_width) < 1 or not 0.0 <= dropout < 1.0:
      raise ValueError(f"need num_classes >= 1 (got {num_classes}), model.fc1_width >= 1 (got "
                       f"{fc1_width}) and 0 <= model.dropout < 1 (got {dropout}).")
    self.input_size = int(input_size)
    self.dtype = _DTYPES[dtype]
    ch = lambda c: max(1, int(round(c * width)))  # noqa: E731
    kw = dict(dtype=self.dtype, rngs=rngs)
    self.stem = Stem(ch, **kw)
    c = self.stem.out_channels
    self.blocks_a = nnx.List([block_a(c, ch, **kw) for _ in range(int(repeats[0]))])
    self.reduction_a = reduction_a(c, ch, **kw)
    c = self.reduction_a.out_channels
    self.blocks_b = nnx.List([block_b(c, ch, **kw) for _ in range(int(repeats[1]))])
    self.reduction_b = reduction_b(c, ch, **kw)
    c = self.reduction_b.out_channels
    self.blocks_c = nnx.List([block_c(c, ch, **kw) for _ in range(int(repeats[2]))])
    self.trunk_channels = c
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.fc1 = nnx.Linear(c, int(fc1_width), dtype=self.dtype, rngs=rngs)
    self.fc2 = nnx.Linear(int(fc1_width), int(num_classes), dtype=self.dtype, rngs=rngs)

  def _check(self, images: jax.Array):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3] (NHWC, from preprocess()); got shape "
                       f"{images.shape}.")
    if images.shape[1:3] != (self.input_size, self.input_size):
      raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but model.input_size is "
                       f"{self.input_size}; resize with preprocess(images, {self.input_size}).")

  def feature_maps(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Trunk outputs [B, h, w, c] after stem, block_a, reduction_a, block_b, reduction_b, block_c."""
    self._check(images)
    x = images.astype(self.dtype)
    out = {"stem": (x := self.stem(x, train))}
    for name, blocks, reduction in (("a", self.blocks_a, self.reduction_a),
                                    ("b", self.blocks_b, self.reduction_b),
                                    ("c", self.blocks_c, None)):
      for block in blocks:
        x = block(x, train)
      out[f"block_{name}"] = x
      if reduction is not None:
        out[f"reduction_{name}"] = (x := reduction(x, train))
    return out

  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    out_dtype = jnp.promote_types(self.dtype, jnp.float32)  # float32, or float64 for float64.
    x = self.feature_maps(images, train)["block_c"]
    x = jnp.mean(x.astype(out_dtype), axis=(1, 2)).astype(self.dtype)  # Global average pool.
    x = self.dropout(x, deterministic=not train)
    features = nnx.relu(self.fc1(x))
    logits = self.fc2(features)
    return {"logits": logits.astype(out_dtype), "features": features.astype(out_dtype)}


# Parameter init is one jitted program; without these options XLA CPU spends ~5x longer compiling it
# (and eager init compiles one small program per distinct parameter shape).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                          "xla_llvm_disable_expensive_passes": True}


def _build(hparams: tuple, rngs: nnx.Rngs) -> InceptionResNet:
  return InceptionResNet(**dict(hparams), rngs=rngs)


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options=_INIT_COMPILER_OPTIONS)
def _init_cpu(hparams, rngs_def, rngs_state):
  rngs = nnx.merge(rngs_def, rngs_state)
  return nnx.state(_build(hparams, rngs)), nnx.state(rngs)


_init = jax.jit(_init_cpu.__wrapped__, static_argnums=(0, 1))


def create_model(model_config, num_classes: int, rngs: nnx.Rngs) -> InceptionResNet:
  """Builds the CNN from config.model (input_size, width, repeats, fc1_width, dropout, dtype).

  Parameters are initialised in one jitted call, compiled once per configuration (directly when
  already under a JAX transform such as nnx.eval_shape); `rngs` is advanced as by eager
  construction. Dropout draws from the "dropout" stream of `rngs` (else its default stream).
  """
  name = model_config.get("name", "inception_resnet")
  if name != "inception_resnet":
    raise ValueError(f"model.name={name!r} is unknown; the only model is 'inception_resnet'.")
  hparams = (("num_classes", int(num_classes)), ("input_size", model_config.input_size),
             ("width", model_config.width), ("repeats", tuple(model_config.repeats)),
             ("fc1_width", model_config.fc1_width), ("dropout", model_config.dropout),
             ("dtype", model_config.dtype))
  rngs_def, rngs_state = nnx.split(rngs)
  if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(rngs_state)):
    return _build(hparams, rngs)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda s: _build(hparams, nnx.merge(rngs_def, s)),
                                         rngs_state))
  init = _init_cpu if jax.default_backend() == "cpu" else _init
  model_state, rngs_state = init(hparams, rngs_def, rngs_state)
  nnx.update(rngs, rngs_state)
  return nnx.merge(graphdef, model_state)


def preprocess(images: jax.Array, input_size: int) -> jax.Array:
  """uint8 [B, S, S, 3] (any S) -> float32 [B, input_size, input_size, 3] in [-1, 1]. Jittable.

  Resized (bilinear, antialiased) with jax.image.resize when S != input_size.
  """
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f"preprocess: images must be square [B, S, S, 3]; got shape {images.shape}.")
  if images.dtype != jnp.uint8:
    raise ValueError(f"preprocess: images must be uint8 in [0, 255]; got {images.dtype} "
                     "(convert with .astype(np.uint8) after scaling).")
  x = jnp.asarray(images).astype(jnp.float32)
  if images.shape[1] != input_size:
    x = jax.image.resize(x, (x.shape[0], input_size, input_size, 3), method="bilinear",
                         antialias=True)
  return jnp.clip(x / 127.5 - 1.0, -1.0, 1.0)


def param_count(model: nnx.Module) -> int:
  """Number of trainable parameters (nnx.Param; BatchNorm running stats excluded)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
