"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flag, set here at import, before JAX initialises its backend (XLA reads XLA_FLAGS then):
`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` (CPU_XLA_FLAG): convolutions run on
XLA's Eigen kernels instead of YNNPACK; dots and reductions stay on YNNPACK as in XLA's default. It
is not added when XLA_FLAGS already names that flag (XLA's default back: YNN_DEFAULT, i.e.
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`). Every entry point of
the package imports fer_jax first; a script that runs JAX computations before importing fer_jax
keeps XLA's default. Accelerator backends ignore the flag.

Why (measured 2026-12-04 on a 2-core CPU, each setting in its own process):
- Faster at both CPU sizes of bench/backbone.py: XLA's default sends the train step's forward,
  input-gradient and weight-gradient convolutions to YNNPACK, whose kernels are slower than Eigen's
  here (the weight-gradient ones most). Train step, 11 interleaved rounds: input 107, width 0.25,
  batch 16: 208 vs 184 images/s (PyTorch 221: 0.96x vs 0.81x); the demo's network (input 75, width
  0.125, batch 32): 998 vs 859 images/s (PyTorch 749: 1.32x vs 1.24x). Again under the malloc
  settings below (both sides, `python -m bench.backbone --glibc_malloc`): 331 vs 278 and 1,096 vs
  1,044 images/s.
- It computes as well: one train step is as close to float64 as XLA's default
  (tests/test_numerics.py: worst tensor 9.8e-6 vs 1.1e-5, median 2.4e-6 vs 2.2e-6), and over 300 SGD
  steps of the demo's network its parameters drift from the float64 run exactly as the default's do
  (1.0e-3 at step 5, 5.3e-3 at 10, 2.1e-2 vs 2.3e-2 at 25, 0.20 vs 0.21 at 300: `python -m
  bench.flag_training --mode=divergence`; every float32 setting, and float64 itself, is another
  trajectory by step 25).
- What 2,000-step trainings reach therefore scatters with it as without it: stage 1 of the demo's
  fold 1, training seeds 0-7 (`python -m bench.flag_training`, test frame accuracy %): with it 53.0
  / 77.1 / 74.9 / 62.1 / 77.5 / 67.6 / 62.1 / 71.0 (mean 68.2, sd 8.6); XLA's default 74.9 / 75.2 /
  72.2 / 84.6 / 68.5 / 63.2 / 79.4 / 67.9 (mean 73.2, sd 6.8); better in 5 of 8 pairs, mean paired
  difference -5.1 points (sd 13.1, t = -1.1). Fold 0, seeds 0-3: with it 65.0 / 57.9 / 56.0 / 62.6
  (mean 60.4), XLA's default 72.8 / 46.4 / 50.2 / 65.6 (mean 58.8). All 12 pairs: better in 7, mean
  difference -2.9 points (sd 11.8, t = -0.8): no difference these runs can resolve. The demo's folds
  are seed 0: README's table was measured with this flag.
Other settings: `=reduce` (YNN_REDUCE: YNNPACK reductions only, dots and convolutions to Eigen) is
as fast at the bench's size but slower at the demo's network (YNNPACK dots win there); `=-reduce`
(YNN_NO_REDUCE: XLA's own reductions) is less accurate in one step (tests/test_numerics.py).

malloc settings, also set at import (fer_jax/malloc_settings.py has the why and the figures): glibc
keeps freed buffers for reuse instead of unmapping them, so XLA CPU's per-step buffers stop costing
a page fault per 4 KiB page every step (1.3x on the train step at bench/backbone.py's size).
`MALLOC_APPLIED` holds what was set; FER_JAX_TUNE_MALLOC=0 leaves malloc as it is.
"""
import os

from fer_jax import malloc_settings

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
CPU_XLA_FLAG = f"--{YNN_FLAG}=-individual_convolution"  # What fer_jax sets (see above).
YNN_DEFAULT = f"--{YNN_FLAG}=+individual_convolution"  # XLA's default set, named explicitly.
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # YNNPACK reductions only: dots and convolutions to Eigen.
YNN_NO_REDUCE = f"--{YNN_FLAG}=-reduce"  # XLA's default less YNNPACK reductions.

if YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + CPU_XLA_FLAG).strip()

MALLOC_APPLIED = malloc_settings.apply()  # {mallopt parameter: value} glibc accepted.
