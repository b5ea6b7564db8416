"""Test-session setup: 8 fake CPU devices for JAX, TensorFlow kept off any GPU, absl flags parsed."""
import os
import sys

# Merged into XLA_FLAGS, never overwriting it.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

import fer_jax  # noqa: E402,F401  pylint: disable=unused-import

flags.FLAGS.mark_as_parsed()
