"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flag, set here at import, before JAX initialises its backend (XLA reads XLA_FLAGS then):
`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` (CPU_XLA_FLAG): convolutions run on
XLA's Eigen kernels instead of YNNPACK; dots and reductions stay on YNNPACK as in XLA's default. It is
not added when XLA_FLAGS already names that flag (XLA's default back: YNN_DEFAULT, i.e.
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`). Every entry point of the
package imports fer_jax first; a script that runs JAX computations before importing fer_jax keeps
XLA's default. Accelerator backends ignore the flag.

Why (measured 2026-12-04, 2 cores, each setting in its own process):
- Faster at both CPU sizes of bench/backbone.py: YNNPACK's convolutions (XLA's default sends the
  forward, input-gradient and weight-gradient convolutions of the train step there) are slower than
  Eigen's here; the weight-gradient ones most. Train step at input 107, width 0.25, batch 16:
  208-226 vs 168-197 images/s; at the demo's network (input 75, width 0.125, batch 32): 1,002 vs 820.
- One train step is as close to float64 as XLA's default (tests/test_numerics.py: worst tensor 9.8e-6
  vs 1.1e-5, median 2.4e-6 vs 2.2e-6) and a lone convolution really leaves YNNPACK with it
  (tests/test_cpu_flags.py).
- What 2,000-step trainings reach (python -m bench.flag_training, stage 1 of the demo's fold 1, test
  frame accuracy per training seed, this flag vs XLA's default): see bench/README.md. Single trainings
  move by 10-20 points with any change of summation order, both ways; no seed-by-seed ranking holds.
Other settings measured: `=reduce` (YNN_REDUCE: YNNPACK reductions only; dots and convolutions to
Eigen) is as fast at the bench's size but slower at the demo's network (YNNPACK dots win there);
`=-reduce` (YNN_NO_REDUCE: XLA's own reductions) is less accurate (tests/test_numerics.py).
"""
import os

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
CPU_XLA_FLAG = f"--{YNN_FLAG}=-individual_convolution"  # What fer_jax sets (see above).
YNN_DEFAULT = f"--{YNN_FLAG}=+individual_convolution"  # XLA's default set, named explicitly.
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # YNNPACK reductions only: dots and convolutions to Eigen.
YNN_NO_REDUCE = f"--{YNN_FLAG}=-reduce"  # XLA's default less YNNPACK reductions.

if YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + CPU_XLA_FLAG).strip()
