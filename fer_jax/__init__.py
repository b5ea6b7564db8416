"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU flag set here, at import, before JAX initialises its backend (XLA reads XLA_FLAGS then):
`--xla_cpu_experimental_ynn_fusion_type=reduce` (YNNPACK reductions), unless XLA_FLAGS already names
the flag (turn it off with `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce`). Import
fer_jax before the first JAX computation of the process (every entry point of the package does);
accelerator backends ignore the flag. Why it is on:
- Faster: the CPU train step at the bench's size (input 107, width 0.25, batch 16, 2 threads) is
  ~1.2x faster with it (`python -m bench.backbone` times both; numbers in bench/README.md).
- Correct: a train step with it is closer to float64 than without it (tests/test_numerics.py; at the
  demo's network, input 75, width 0.125, batch 16, FC1 32: worst tensor 1e-5 vs 1.1e-4 without); 477
  reductions (sum, mean, max, min, argmax/argmin with ties, logsumexp, any/all, -inf inputs) give the
  same results with and without it; evaluating one trained checkpoint with and without it gives
  bit-identical logits.
- Long trainings end elsewhere with it, as with any change of summation order: without the flag, the
  demo's 2,000-step fold-1 training moved from 65.7 / 63.8 % (seeds 0 / 1) to 66.3 / 51.1 % when every
  initial weight moved by one float32 ulp (measured 2026-12-04); such single runs do not rank flags.
"""
import os

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCE = f"--{YNN_FLAG}=reduce"  # XLA_FLAGS entry for YNNPACK reductions (tests/bench compare it).
YNN_OFF = f"--{YNN_FLAG}=-reduce"  # ... and without them.

if YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + YNN_REDUCE).strip()
