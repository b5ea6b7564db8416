"""The errors a user can cause and fix. Entry points print these with their message, no traceback."""
from fer_jax.data.builders.common import EmptySequenceError
from fer_jax.data.builders.common import ManualDataError
from fer_jax.data.registration import NoFaceError
from fer_jax.data.registration import UnreadableImageError
from fer_jax.train import NonFiniteLossError

USER_ERRORS = (ManualDataError, EmptySequenceError, NoFaceError, UnreadableImageError,
               NonFiniteLossError)
