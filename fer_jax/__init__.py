"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flags: fer_jax sets none, so XLA's default holds: YNNPACK runs dots and reductions
(`--xla_cpu_experimental_ynn_fusion_type`; checked by compiling one of each). Two non-default settings
were measured (2026-12-04; a value without +/- REPLACES the default set):
- `=reduce` (YNN_REDUCE: YNNPACK reductions only, dots back to Eigen): faster at the bench's size
  (input 107, width 0.25: 1.17-1.25x over three bench.backbone runs), slower at the demo's network
  (input 75, width 0.125: 0.87x); README block 1 took 5:26 with it vs 5:06 at the default. Its one step
  is within float32 summation error of float64 (tests/test_numerics.py). But stage 1 of the demo's fold
  1 (python -m bench.flag_training), training seeds 0 / 1 / 2, ended at 52.4 / 67.2 / 67.4 % test frame
  accuracy with it vs 74.9 / 75.2 / 72.2 % at the default (seed 0 also inside the full demo run; fold
  0: 71.2 vs 72.8 %).
- `=-reduce` (YNN_NO_REDUCE: YNNPACK dots, XLA's own reductions): seed 0 ended at 65.7 %; against
  `=reduce`, seeds 0-3 gave 65.7 / 79.1 / 78.5 / 69.7 % vs 52.4 / 67.2 / 67.4 / 69.7 %.
Single 2,000-step trainings move by 10+ points with any change of summation order, but no setting beat
the default here, so none is set.
"""

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # YNNPACK reductions only (dots to Eigen): tests/bench compare it.
YNN_NO_REDUCE = f"--{YNN_FLAG}=-reduce"  # XLA's default less YNNPACK reductions (YNN dots stay).
