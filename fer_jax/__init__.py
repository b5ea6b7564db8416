"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flags: fer_jax sets none. `--xla_cpu_experimental_ynn_fusion_type=reduce` (YNNPACK reductions)
computes correctly: a train step with it is closer to float64 than without it (tests/test_numerics.py;
at the demo's network, input 75, width 0.125, batch 32, FC1 64: worst tensor 7e-6 vs 3e-5 without);
477 reductions (sum, mean, max, min, argmax/argmin with ties, logsumexp, any/all, -inf inputs) give
the same results with and without it; evaluating one trained checkpoint with and without it gives
bit-identical logits; BatchNorm running statistics from non-zero values update identically (2e-5).
The worse 2,000-step demo trainings with it (fold 1 of configs/demo.py stage 1, seeds 0 / 1: 52.4 /
51.5 % test frame accuracy, vs 65.7 / 63.8 % without) are the trajectory's sensitivity to rounding,
not the flag: without the flag, the same trainings with every initial weight moved by one float32
ulp ended at 66.3 / 51.1 %, and with a BatchNorm of the same function but a different summation order
at 52.3 / 50.7 % (measured 2026-12-04). It is still not a default: the 2-seed comparison it had to
pass is worse with it; set it yourself in XLA_FLAGS to use it.
"""

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # XLA_FLAGS entry for YNNPACK reductions (tests/bench compare it).
