"""Entry point: `python -m fer_jax.main --config=configs/mmi.py --workdir=DIR`.

Flags, logging, devices, then experiment.run(config, workdir). Every knob lives in the config.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, results.json and report.md are written.")
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (multi-host). Default: "
                  "on when SLURM runs more than one task.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.
  import jax  # pylint: disable=g-import-not-at-top
  distributed = FLAGS.distributed
  if distributed is None:
    distributed = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  if distributed:
    jax.distributed.initialize()  # Reads coordinator, process count and id from SLURM.
  logging.info("JAX process %d/%d, local devices %s, all devices %d.", jax.process_index(),
               jax.process_count(), jax.local_devices(), jax.device_count())
  logging.info("Config:\n%s", FLAGS.config)
  from fer_jax import errors  # pylint: disable=g-import-not-at-top
  from fer_jax import experiment  # pylint: disable=g-import-not-at-top
  try:
    experiment.run(FLAGS.config, FLAGS.workdir)
  except errors.USER_ERRORS as e:  # A mistake the user can fix: say what and how, no traceback.
    logging.error("%s: %s", type(e).__name__, e)
    print(f"\nERROR ({type(e).__name__}): {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
