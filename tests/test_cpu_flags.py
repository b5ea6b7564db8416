"""The XLA CPU flag fer_jax sets at import (fer_jax/__init__.py): set once, respected, effective."""
import fer_jax
import fresh_python

# One stride-2 convolution of the stem's size (YNNPACK takes convolutions of this size, not tiny
# ones) and one matmul, compiled after `import fer_jax`; prints XLA_FLAGS and where each one ran.
PROBE = """
import os, fer_jax, jax, jax.numpy as jnp
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(jnp.ones((16, 51, 51, 16)), jnp.ones((3, 3, 16, 24))).compile().as_text()
dot = jax.jit(jnp.matmul).lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""))
print("conv on YNNPACK:", "__ynn_fusion" in hlo, "dot on YNNPACK:", "ynn" in dot.lower())
"""


def _probe(xla_flags):
  env = None if xla_flags is None else {"XLA_FLAGS": xla_flags}
  return fresh_python.run(["-c", PROBE], env=env, unset=["XLA_FLAGS"]).strip().splitlines()[-2:]


def test_import_sets_the_flag_and_convolutions_leave_ynnpack():
  flags, where = _probe(None)
  assert flags == fer_jax.CPU_XLA_FLAG
  assert where == "conv on YNNPACK: False dot on YNNPACK: True"


def test_other_flags_are_kept():
  flags, where = _probe("--xla_force_host_platform_device_count=2")
  assert flags == "--xla_force_host_platform_device_count=2 " + fer_jax.CPU_XLA_FLAG
  assert where == "conv on YNNPACK: False dot on YNNPACK: True"


def test_a_named_setting_wins_and_xla_default_uses_ynnpack_convolutions():
  # The positive control: the probe sees a convolution on YNNPACK when XLA's default is asked for.
  flags, where = _probe(fer_jax.YNN_DEFAULT)
  assert flags == fer_jax.YNN_DEFAULT
  assert where == "conv on YNNPACK: True dot on YNNPACK: True"
