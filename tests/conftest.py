"""Test-session setup: 8 fake CPU devices for JAX, TensorFlow kept off any GPU, absl flags parsed."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
