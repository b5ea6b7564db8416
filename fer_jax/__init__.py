"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flags: fer_jax sets none. `--xla_cpu_experimental_ynn_fusion_type=reduce` (YNNPACK reductions)
makes the CPU train step faster (bench/backbone.py) and one step is at least as close to float64 with it
as without (tests/test_numerics.py), but 2,000-step demo trainings with it ended systematically worse
(fold 1 of configs/demo.py, seeds 0 and 1: 52.4 / 51.5 % test accuracy with it, 65.7 / 63.8 % without),
so it is not a default; set it yourself in XLA_FLAGS to try it.
"""

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # XLA_FLAGS entry for YNNPACK reductions (tests/bench compare it).
