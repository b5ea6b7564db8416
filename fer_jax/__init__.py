"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flags: fer_jax sets none. `--xla_cpu_experimental_ynn_fusion_type=reduce` (YNNPACK reductions)
computes correctly but is not a default, because trainings with it end worse:
- Correct: a train step with it is closer to float64 than without it (tests/test_numerics.py; at the
  demo's network, batch 16, FC1 32: worst tensor 1e-5 vs 1.1e-4 without; batch 32, FC1 64 as the demo
  trains: 7e-6 vs 3e-5); 477 reductions (sum, mean, max, min, argmax/argmin with ties, logsumexp,
  any/all, -inf inputs) give the same results with and without it; 1,500 repeats of BN-sized sums are
  bit-identical (no race).
- Speed, 2 threads each (bench/README.md): faster at the bench's size (input 107, width 0.25: 1.17-1.25x
  over three runs), slower at the demo's network (input 75, width 0.125: 0.87x); the demo's README block
  1 took 5:26 with it vs 5:06 without (2026-12-04, quiet machine, cold compilation cache).
- Outcome: stage 1 of the demo's fold 1 (2,000 steps, same data and machine; bench/flag_training.py),
  trained with training seeds 0-3 with and without it, ended at 52.4 / 67.2 / 67.4 / 69.7 % test frame
  accuracy with it vs 65.7 / 79.1 / 78.5 / 69.7 % without: never better, 9 points lower on average
  (measured 2026-12-04). No faulty kernel explains it (above); until one does, the flag stays off. Set
  it yourself in XLA_FLAGS to use it (before JAX initialises its backend).
"""

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # XLA_FLAGS entry for YNNPACK reductions (tests/bench compare it).
YNN_OFF = f"--{YNN_FLAG}=-reduce"  # ... and without them, explicitly.
