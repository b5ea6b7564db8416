"""The launch scripts, executed: launch/local.sh (one process, 2 devices) and launch/slurm.sbatch under a
fake `srun` that starts 2 processes of 1 device each on 127.0.0.1 (jax.distributed reads SLURM's
environment). Same global batch and data, so both must train the same network."""
import json
import os
import stat
import subprocess

import numpy as np

from configs import demo
from fer_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_SRUN = """#!/usr/bin/env bash
# Stands in for SLURM's srun on one machine: runs the command once per task, SLURM_PROCID 0..N-1.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$FAKE_SRUN_LOGS/task$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


def _env(tmp_path, devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _flags(tmp_path):
  return [f"--config.data.data_dir={tmp_path / 'tfds'}", "--jax_cache="]


def _params(workdir):
  config = demo.get_config("smoke")
  with open(os.path.join(workdir, "results.json")) as f:
    num_classes = len(json.load(f)["class_names"])
  model = train.load_model(config, os.path.join(workdir, "fold_0", "cnn"), num_classes)
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in __import__("jax").tree.leaves(nnx.state(model, nnx.Param))]


def test_local_and_slurm_launches_train_the_same_network(tmp_path):
  local = tmp_path / "local"
  subprocess.run(["bash", "launch/local.sh", "configs/demo.py:smoke", str(local)] + _flags(tmp_path),
                 cwd=ROOT, env=_env(tmp_path, 2), check=True, capture_output=True, timeout=600)
  assert (local / "report.md").exists() and (local / "log.txt").exists()

  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  srun = bin_dir / "srun"
  srun.write_text(FAKE_SRUN)
  srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
  env = _env(tmp_path, 1)
  env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_NTASKS="2", SLURM_JOB_ID="4242",
             SLURM_STEP_NODELIST="localhost", SLURM_SUBMIT_DIR=ROOT,
             FAKE_SRUN_LOGS=str(tmp_path))
  multi = tmp_path / "multi"
  proc = subprocess.run(["bash", "launch/slurm.sbatch", "configs/demo.py:smoke", str(multi)]
                        + _flags(tmp_path), cwd=ROOT, env=env, capture_output=True, timeout=600)
  logs = [(tmp_path / f"task{i}.log").read_text() for i in range(2)]
  assert proc.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
  for i in range(2):
    assert f"JAX process {i}/2" in logs[i] and "all devices 2" in logs[i]

  with open(local / "results.json") as f:
    single = json.load(f)
  with open(multi / "results.json") as f:
    double = json.load(f)
  assert single["folds"][0]["sizes"] == double["folds"][0]["sizes"]
  for a, b in zip(_params(str(local)), _params(str(multi))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
