"""Stage 3: the CNN and the CRF fine-tuned together on windows of consecutive frames.

Starts from the CNN of stage 1 (its best checkpoint) and the CRF of stage 2 and trains both by the
CRF negative log-likelihood of windows of W consecutive frames, in the shared training loop of
fer_jax/train.py (an Objective: this file gives the loss, the batch kind and the validation).

- Loss per step: sum over the batch's windows of -log p(tags | window) divided by the number of real
  frames, + ce_weight * the frames' mean softmax cross-entropy of the CNN logits, + the CRF's
  Gaussian prior of stage 2 divided by the number of training frames (stage 2's MAP objective per
  frame, with windows in place of whole sequences).
- Window boundaries: a window that starts at its sequence's first frame gets the CRF's `start`
  potential, one whose last real frame is the sequence's last gets `end`; other windows get neither.
  Each window's likelihood so conditions on nothing outside it (piecewise training), and the
  potentials are used where Viterbi on whole sequences uses them.
- BatchNorm is frozen: the CNN runs in eval mode (running statistics of stage 1, no dropout; BN
  scale and offset still train). Windows are a few correlated frames of a few sequences, so their
  batch statistics are poor estimates of stage 1's; padded frames cannot leak into statistics; and
  training and evaluation apply the same function, the one stage 2's CRF was fitted on. The model
  ties dropout to BN's mode, so dropout is off too.
- The CRF input: CNN outputs ("logits" FC2, or "features" FC1) concatenated with optional constant
  per-frame inputs ("extra", e.g. geometry), standardised with stage 2's mean/std (CRFInput).
- Best step: frame accuracy of Viterbi on the whole validation sequences (exact; the test metric),
  step 0 (stage 1 + 2 as they are) included: fine-tuning that does not help on validation is undone.
- Optimizer: stage 1's SGD with momentum and weight decay on CNN kernels, at the constant rate
  joint.learning_rate, over CNN and CRF parameters alike. The configs use a tenth of stage 1's final
  rate, as usual for fine-tuning a trained network: at stage 1's final rate (the demo's first
  setting, 1e-3) the test accuracy of the demo swung by up to 10 points between evaluations 25 steps
  apart (the window batches are 8 windows of a few sequences), so which step validation picked was
  mostly chance; at a tenth the swings were a few points.
- After training, experiment.py refits the CRF by stage 2's own procedure on the chosen CNN's outputs
  (joint.refit_crf): see experiment.joint_stage. No augmentation by default: stage 2's CRF
  was fitted on un-augmented frames and stage 3 goes on from it on the same distribution (on the
  demo, augmented windows raised validation but not test accuracy); joint.augment = True applies
  stage 1's config.data.augment, one draw per window (pipeline.window_batches).

workdir: as stage 1's (checkpoints/, best/, metrics.jsonl, tensorboard/); a rerun resumes.
"""
import dataclasses
import time
from typing import Any, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fer_jax import crf
from fer_jax import train
from fer_jax.data import pipeline

CNN_OUTPUTS = ("logits", "features")


@dataclasses.dataclass(frozen=True, eq=False)
class CRFInput:
  """How a frame's CRF input is built: x = (concat(outputs[k] for k in keys, extra) - mean) / std.

  Attributes:
    keys: CNN outputs in order, each "logits" (FC2, the paper) or "features" (FC1).
    mean, std: float32 [D] standardisation (stage 2's, from training frames) or None (none).
  """
  keys: tuple[str, ...] = ("logits",)
  mean: Optional[np.ndarray] = None
  std: Optional[np.ndarray] = None

  def __post_init__(self):
    if not self.keys or any(k not in CNN_OUTPUTS for k in self.keys):
      raise ValueError(f"CRFInput.keys={self.keys}: name one or more of {CNN_OUTPUTS}.")
    if (self.mean is None) != (self.std is None):
      raise ValueError("CRFInput: give both mean and std (stage 2's standardisation) or neither.")

  def __call__(self, outputs: dict, extra=None):
    """outputs {key: [..., D_k]} (+ extra [..., G]) -> float32 [..., D]; NumPy or JAX arrays."""
    xp = jnp if any(isinstance(v, jax.Array) for v in list(outputs.values()) + [extra]) else np
    parts = [outputs[k] for k in self.keys] + ([] if extra is None else [extra])
    x = xp.concatenate([xp.asarray(p, xp.float32) for p in parts], axis=-1)
    if self.mean is not None:
      x = (x - xp.asarray(self.mean, xp.float32)) / xp.asarray(self.std, xp.float32)
    return x


def window_unaries(params: crf.CRFParams, x, mask, first, last):
  """Unaries of windows with `start` on a sequence's first frame and `end` on its last.

  Args:
    params: the CRF. x: float32 [B, W, D]; mask: bool [B, W] (prefixes of True, length >= 1);
    first, last: bool [B], the window starts / ends its sequence.

  Returns:
    float32 [B, W, K]: params.unaries(x), + start at step 0 where first, + end at the last real
    step where last. crf functions called on these with start = end = None score the window.
  """
  u = params.unaries(x)
  w = u.shape[1]
  u = u.at[:, 0].add(jnp.where(first[:, None], params.start, 0.0))
  at_end = jax.nn.one_hot(jnp.sum(mask, axis=1) - 1, w, dtype=u.dtype)  # [B, W]
  return u + at_end[..., None] * jnp.where(last[:, None], params.end, 0.0)[:, None, :]


def window_nll(params: crf.CRFParams, x, tags, mask, first, last):
  """-log p(tags | window) per window: float32 [B] (see window_unaries for the arguments)."""
  u = window_unaries(params, x, mask, first, last)
  return -crf.log_likelihood(u, tags, params.transitions, mask)


def _crf_dict(params: crf.CRFParams) -> dict:
  """CRFParams -> a plain dict of float32 arrays (what the train state and checkpoints hold)."""
  return {f.name: np.asarray(getattr(params, f.name), np.float32)
          for f in dataclasses.fields(crf.CRFParams)}


def _padded_extra(seqs, extra: Optional[Sequence[np.ndarray]], t_max: int):
  if extra is None:
    return None
  out = np.zeros((len(seqs), t_max, np.shape(extra[0])[1]), np.float32)
  for i, e in enumerate(extra):
    out[i, :len(e)] = e
  return out


def sequence_inputs(crf_input: CRFInput, outputs: dict, seqs, extra=None):
  """CRF inputs of whole sequences from per-frame CNN outputs.

  Args:
    outputs: {"logits": [F, C], "features": [F, F1]} in eval_batches order (predict_batches).
    extra: None or one float array [T_i, G] per sequence.

  Returns:
    x float32 [N, T, D] (0 at padding), tags int32 [N, T], mask bool [N, T].
  """
  arrays = {}
  for k in crf_input.keys:
    arrays[k], tags, mask = pipeline.sequence_arrays(seqs, outputs[k])
  x = crf_input(arrays, _padded_extra(seqs, extra, mask.shape[1]))
  return np.where(mask[..., None], x, 0.0).astype(np.float32), tags, mask


@jax.jit
def _sequence_scores(params, x, tags, mask):
  u = params.unaries(x)
  ll = crf.log_likelihood(u, tags, params.transitions, mask, start=params.start, end=params.end)
  pred, _ = crf.viterbi_decode(u, params.transitions, mask, start=params.start, end=params.end)
  return jnp.sum((pred == tags) & mask), -jnp.sum(ll)


def make_objective(crf_input: CRFInput, *, val_seqs, val_extra=None, ce_weight: float = 0.0,
                   prior_scale: float = 0.0, window: int = 1) -> train.Objective:
  """The stage-3 Objective for train.train_and_evaluate (see the module docstring).

  Args:
    crf_input: how frames' CRF inputs are built; with extra, train batches carry "extra".
    val_seqs, val_extra: the validation sequences (and their extra) scored by `evaluate`, whose
      eval_batches are pipeline.eval_batches(val_seqs, ...).
    ce_weight: weight of the per-frame cross-entropy of the CNN logits.
    prior_scale: 1 / (2 sigma2 F_train): the Gaussian prior on the CRF per training frame (0: none).
    window: W (for the img/s count only).

  Trainable tree: {"cnn": the CNN's nnx Param pure dict, "crf": dict of CRFParams fields}.
  """
  with_extra = val_extra is not None
  keys = ("image", "label", "mask", "first", "last") + (("extra",) if with_extra else ())

  def loss(apply, params, batch_stats, batch, key):
    del key  # Eval mode: frozen BatchNorm, no dropout.
    images, tags, mask = batch["image"], batch["label"], batch["mask"]
    b, w = tags.shape
    out, _ = apply(params["cnn"], batch_stats, images.reshape((b * w,) + images.shape[2:]), False)
    outputs = {k: v.reshape(b, w, -1) for k, v in out.items()}
    x = crf_input(outputs, batch["extra"] if with_extra else None)
    p = crf.CRFParams(**params["crf"])
    frames = jnp.maximum(jnp.sum(mask), 1)
    u = window_unaries(p, x, mask, batch["first"], batch["last"])
    nll = -jnp.sum(crf.log_likelihood(u, tags, p.transitions, mask)) / frames
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], tags)
    ce = jnp.sum(jnp.where(mask, ce, 0.0)) / frames
    prior = prior_scale * sum(jnp.sum(jnp.square(v)) for v in params["crf"].values())
    pred, _ = crf.viterbi_decode(u, p.transitions, mask)
    accuracy = jnp.sum((pred == tags) & mask) / frames
    return nll + ce_weight * ce + prior, {"accuracy": accuracy, "nll": nll, "ce": ce}, batch_stats

  def evaluate(steps, params, batch_stats, eval_batches):
    out = train.predict_with(steps, params["cnn"], batch_stats, eval_batches())
    x, tags, mask = sequence_inputs(crf_input, out, val_seqs, val_extra)
    p = crf.CRFParams(**jax.device_get(params["crf"]))
    correct, nll = jax.device_get(_sequence_scores(p, x, tags, mask))
    count = int(mask.sum())
    return {"accuracy": int(correct) / count, "loss": float(nll) / count, "count": count}

  def check_batch(batch, local_batch, step):
    missing = [k for k in keys if k not in batch]
    if missing:
      raise ValueError(f"window batches: the batch of step {step} lacks {missing} (has "
                       f"{sorted(batch)}); use pipeline.window_batches.")
    image, tags = np.asarray(batch["image"]), np.shape(batch["label"])
    if image.ndim != 5 or image.dtype != np.uint8 or image.shape[0] != local_batch or \
        np.shape(batch["mask"]) != tags or tags != image.shape[:2] or not np.all(
            np.asarray(batch["mask"])[:, 0]):
      raise ValueError(f"window batches: step {step} gave image {image.shape} {image.dtype}, label "
                       f"{tags}; expected uint8 [{local_batch}, W, S, S, 3], [{local_batch}, W] "
                       "and "
                       "a mask whose rows each start with a real frame.")

  return train.Objective(name="windows", train_keys=keys, loss=loss, evaluate=evaluate,
                         check_batch=check_batch, cnn_params=lambda params: params["cnn"],
                         images_per_example=window, eval_at_start=True)


def loop_config(config) -> ml_collections.ConfigDict:
  """The shared loop's section for stage 3: config.joint + stage 1's momentum and weight decay."""
  j = config.joint
  return ml_collections.ConfigDict(dict(
      section="config.joint", batch_size=j.batch_size, num_steps=j.steps,
      learning_rate=j.learning_rate, lr_decay_every=max(int(j.steps), 1), lr_decay_factor=1.0,
      momentum=config.train.momentum, weight_decay=config.train.weight_decay,
      log_every=j.log_every, eval_every=j.eval_every, checkpoint_every=j.checkpoint_every,
      eval_batch_size=config.train.eval_batch_size))


@dataclasses.dataclass
class JointResult:
  """What train_joint returns: the best validation step's CNN (eval mode) and CRF."""
  model: nnx.Module
  crf_params: crf.CRFParams
  best_step: int
  best_val_accuracy: Optional[float]
  history: list
  seconds: float  # Wall time of this call.


def train_joint(config, workdir: str, *, model: nnx.Module, crf_params: crf.CRFParams,
                sigma2: Optional[float], train_seqs, val_seqs, num_classes: int, seed: int,
                crf_input: CRFInput = CRFInput(), train_extra=None, val_extra=None,
                mesh=None) -> JointResult:
  """Stage 3 (resumable in workdir) from stage 1's `model` and stage 2's `crf_params`.

  Args:
    config: uses seed, model, train (momentum, weight_decay, eval_batch_size) and joint.
    sigma2: stage 2's prior variance (None: no prior on the CRF).
    train_extra, val_extra: None, or one float array [T_i, G] per sequence (constant CRF inputs).
  """
  t0 = time.perf_counter()
  j = config.joint
  pid, pcount = jax.process_index(), jax.process_count()
  cnn_params, batch_stats = train._weights(model)  # pylint: disable=protected-access
  start = {"cnn": cnn_params, "crf": _crf_dict(crf_params)}
  prior_scale = 0.0 if sigma2 is None else 1.0 / (2.0 * float(sigma2) * train_seqs.num_frames)
  objective = make_objective(crf_input, val_seqs=val_seqs, val_extra=val_extra,
                             ce_weight=float(j.ce_weight), prior_scale=prior_scale,
                             window=int(j.window))
  if (train_extra is None) != (val_extra is None):
    raise ValueError("train_joint: give extra inputs for both training and validation, or neither.")
  result = train.train_and_evaluate(
      config, workdir, num_classes=num_classes, mesh=mesh, objective=objective,
      train_config=loop_config(config), initial=lambda _: (start, batch_stats),
      train_batches=lambda step: pipeline.window_batches(
          train_seqs, int(j.window), int(j.batch_size), seed=seed, start_step=step,
          extra=train_extra, augment=config.data.augment if j.augment else None,
          process_index=pid, process_count=pcount),
      eval_batches=lambda: pipeline.eval_batches(
          val_seqs, config.train.eval_batch_size, process_index=pid, process_count=pcount))
  best = crf.CRFParams(**{k: jnp.asarray(v) for k, v in result.params["crf"].items()})
  return JointResult(model=result.model, crf_params=best, best_step=result.best_step,
                     best_val_accuracy=result.best_val_accuracy, history=result.history,
                     seconds=time.perf_counter() - t0)


def predict_tags(model: nnx.Module, crf_params: crf.CRFParams, config, seqs,
                 crf_input: CRFInput = CRFInput(), extra=None):
  """Viterbi labels of whole sequences with a CNN and a CRF.

  Returns:
    tags int32 [N, T] (0 at padding), mask bool [N, T] (as experiment.model_outputs).
  """
  out = train.predict_batches(model, config, pipeline.eval_batches(
      seqs, config.train.eval_batch_size, process_index=jax.process_index(),
      process_count=jax.process_count()))
  x, _, mask = sequence_inputs(crf_input, out, seqs, extra)
  return np.asarray(crf.predict(crf_params, x, mask)), mask
