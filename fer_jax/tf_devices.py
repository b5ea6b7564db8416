"""Keeps TensorFlow (used only for TFDS, tf.data and summaries) off the accelerators: JAX owns them."""
import functools


@functools.lru_cache(maxsize=None)
def hide_gpus_from_tensorflow() -> None:
  """Makes TF see no GPU. Call before TF touches a device; later calls (and no TF installed) are no-ops.

  Both entry points (fer_jax.main, fer_jax.predict) call it first; modules that import TF call it too.
  """
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # TF already initialised its devices; nothing to hide then.
    pass
