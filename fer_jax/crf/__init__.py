"""Linear-chain CRF in pure JAX: inference, decoding, likelihood, full-batch fit, online smoothing.

`from fer_jax import crf` gives the whole public API; the modules hold one job each:
  inference.py  log Z, marginals, Viterbi, sequence scores (batched kernels, custom VJP).
  params.py     CRFParams, unaries, predict / predict_marginals from features, save_crf / load_crf.
  fitting.py    the objective, full-batch L-BFGS fit, sigma^2 selection (validation or inner CV).
  online.py     FixedLagSmoother: fixed-lag marginals and labels over a stream of frames.
"""
from fer_jax.crf import online
from fer_jax.crf.fitting import FitInfo
from fer_jax.crf.fitting import fit
from fer_jax.crf.fitting import fit_path
from fer_jax.crf.fitting import objective
from fer_jax.crf.fitting import select_sigma2
from fer_jax.crf.fitting import select_sigma2_inner_cv
from fer_jax.crf.fitting import SelectionRow
from fer_jax.crf.fitting import TRACE_COUNT
from fer_jax.crf.inference import log_likelihood
from fer_jax.crf.inference import log_partition
from fer_jax.crf.inference import marginals
from fer_jax.crf.inference import sequence_score
from fer_jax.crf.inference import viterbi_decode
from fer_jax.crf.online import FixedLagSmoother
from fer_jax.crf.params import CRFParams
from fer_jax.crf.params import load_crf
from fer_jax.crf.params import predict
from fer_jax.crf.params import predict_marginals
from fer_jax.crf.params import save_crf
from fer_jax.crf.params import unaries
