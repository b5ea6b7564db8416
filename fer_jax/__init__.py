"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX.

XLA CPU default set here, the one place, before JAX initialises a backend (XLA reads XLA_FLAGS
once, at backend init; importing fer_jax first is enough): reductions (BatchNorm statistics, bias
and weight-gradient sums) go to YNNPACK, `--xla_cpu_experimental_ynn_fusion_type=reduce`, appended
to XLA_FLAGS unless XLA_FLAGS already names `xla_cpu_experimental_ynn_fusion_type` (yours wins;
`=-reduce` turns it off). tests/test_numerics.py checks a train step with it against float64 (within 1e-4,
~10x closer than without it); bench/backbone.py measures the speed. It only changes CPU compiles;
as any change of summation order does, it changes long SGD trajectories (and the demo's figures).
"""
import os

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
XLA_CPU_DEFAULTS = f"--{YNN_FLAG}=reduce"

if YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_CPU_DEFAULTS).strip()
