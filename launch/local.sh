#!/usr/bin/env bash
# One process over all local GPUs (JAX data parallelism over a Mesh of every local device).
#   bash launch/local.sh configs/mmi.py /data/runs/mmi [more absl flags, e.g. --config.train.batch_size=128]
# A rerun with the same workdir resumes: finished folds are skipped, an interrupted one restarts from its
# latest checkpoint.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash launch/local.sh CONFIG WORKDIR [flags...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
mkdir -p "$workdir"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
python -m fer_jax.main --config="$config" --workdir="$workdir" "$@" 2>&1 | tee -a "$workdir/log.txt"
