"""fer_jax: spatio-temporal facial-expression recognition (CNN + linear-chain CRF) in JAX."""
