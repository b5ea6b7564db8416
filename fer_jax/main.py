"""Entry point: `python -m fer_jax.main --config=configs/mmi.py --workdir=DIR`.

Flags, logging, devices, then experiment.run(config, workdir). Every knob lives in the config.
"""
import logging as logging_std
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import fer_jax  # noqa: E402  # Its import sets the XLA CPU flag and the malloc settings.
from fer_jax import malloc_settings  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, results.json and report.md are written.")
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (multi-host). Default: "
                  "on when SLURM runs more than one task.")
flags.DEFINE_string("jax_cache", os.path.expanduser("~/.cache/fer_jax/jax"),
                    "Persistent XLA compilation cache ('' disables): reruns and the cross-fitted CNNs "
                    "reuse compiled steps.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of orbax (a line per checkpoint thread event); warnings still show."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from fer_jax import config_validation  # pylint: disable=g-import-not-at-top
  from fer_jax import errors  # pylint: disable=g-import-not-at-top
  try:  # Before TensorFlow, JAX or any data: a wrong field costs nothing.
    config_validation.validate(FLAGS.config)
  except errors.FerError as e:
    _exit_with(e)
  from fer_jax import tf_devices  # pylint: disable=g-import-not-at-top
  tf_devices.hide_gpus_from_tensorflow()  # JAX owns the accelerators.
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.jax_cache:
    jax.config.update("jax_compilation_cache_dir", FLAGS.jax_cache)
  distributed = FLAGS.distributed
  if distributed is None:
    distributed = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  if distributed:
    jax.distributed.initialize()  # Reads coordinator, process count and id from SLURM.
  logging.info("JAX process %d/%d, local devices %s, all devices %d; XLA_FLAGS %r; malloc %s.",
               jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count(),
               os.environ.get("XLA_FLAGS", ""), fer_jax.MALLOC_APPLIED
               or f"as it was ({malloc_settings.why_skipped() or 'not glibc'})")
  logging.info("Config:\n%s", FLAGS.config)
  try:
    config_validation.validate(FLAGS.config, num_devices=jax.device_count(),
                               num_processes=jax.process_count())
    from fer_jax import experiment  # pylint: disable=g-import-not-at-top
    experiment.run(FLAGS.config, FLAGS.workdir)
  except errors.FerError as e:
    _exit_with(e)


def _exit_with(error):
  """A mistake the user can fix: say what and how, no traceback, exit status 2."""
  print(f"\nERROR ({type(error).__name__}): {error}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  app.run(main)
