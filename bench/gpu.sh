#!/usr/bin/env bash
# Every device figure of the backbone-speed issue in one run on a lent GPU (about 8 minutes on one
# H200): the paper network's bf16 train step vs PyTorch and the largest batch (bench.backbone
# --mode=gpu --max_batch), CRF log Z sequential vs parallel at T = 100 / 1,000 / 10,000 (bench.crf
# section 3), and predict's CNN + CRF stages with the paper network (bench.predict --mode=cnn).
#
#   bash bench/gpu.sh [OUT_DIR]      # from the repo root; logs go to OUT_DIR (default /tmp/gpu_bench)
#
# Packages the GPU image may lack (or hold at other versions) can travel as wheels in .whl/ (the
# pinned flax, optax, orbax-checkpoint, jaxopt, ml-collections, dlib-bin of requirements.txt, built
# for the machine's Python): they are installed into /tmp/site first when that folder exists.
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_bench}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# Allocate on demand (PyTorch's worker shares the card), up to 90 % of it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
py=${PYTHON:-python3}
if [ -d .whl ]; then
  rm -rf /tmp/site && $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $py -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
} 2>&1 | tee "$out/versions.txt"
timeout 270 $py -m bench.backbone --mode=gpu --max_batch 2>&1 | tee "$out/backbone.txt"
timeout 90 $py -m bench.crf --sections=3 2>&1 | tee "$out/crf_logz.txt"
timeout 120 $py -m bench.predict --mode=cnn --model=paper --frames=512 --size=320x240 --repeats=3 \
  --json_out="$out/predict.json" 2>&1 | tail -40 | tee "$out/predict.txt"
