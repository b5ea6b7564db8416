"""The training loop of stage 1 (CNN on single frames) and stage 3 (joint CNN + CRF on windows).

One loop (train_and_evaluate) for both; an Objective gives what differs: the loss, the kind of
batch it reads, the validation metric and which part of the trainable tree is the CNN. FRAMES
(this module) is stage 1's per-frame cross-entropy; fer_jax/joint.py builds stage 3's CRF
likelihood of windows. jax.jit data parallel over a Mesh; no pmap.

- Data parallel: a Mesh over all devices with the axis "data"; batches are NamedSharding'd on
  their first axis, the train state is replicated. BatchNorm statistics are over the GLOBAL batch
  (XLA inserts the cross-device reductions). One compile of the train step per run.
- Optimizer (Caffe-like SGD): coupled L2 weight decay 1e-4 added to the gradient of conv and
  dense kernels only (optax.add_decayed_weights with a mask, before momentum, as Caffe's
  `weight_decay`), then SGD momentum 0.9 with 0.01 divided by 10 every 100K steps
  (optax.exponential_decay, staircase). Unlike Caffe, optax applies the learning rate after the
  momentum trace, which differs only right after a decay step.
- Dropout: the key of step s is fold_in(key(seed), s): unique per step and the same on resume.
- NaN guard: every step records its loss and whether the updated state is all finite; these are
  fetched at every log, eval and checkpoint step (before anything is saved), and the first bad step
  raises NonFiniteLossError (a FloatingPointError) naming it and the window checked.
- Evaluation is exact: padded batches carry a mask; masked sums are divided by the real count.
- workdir: checkpoints/ (latest few, with optimizer state), best/ (weights of the best validation
  accuracy), metrics.jsonl, tensorboard/. A rerun resumes from checkpoints/ automatically.
"""
import dataclasses
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator

from absl import logging
from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax

from fer_jax import checkpoint as checkpoint_lib
from fer_jax import errors
from fer_jax import metrics_writer
from fer_jax import models

TrainBatches = Callable[[int], Iterator[dict]]
EvalBatches = Callable[[], Iterable[dict]]
KEEP_CHECKPOINTS = 3


NonFiniteLossError = errors.NonFiniteLossError

# apply(cnn_params, batch_stats, images uint8 [B, S, S, 3], train: bool, key=None)
#   -> ({"logits": [B, C], "features": [B, F]}, new batch_stats); built by Steps for one model.
Apply = Callable[..., tuple[dict, dict]]


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the shared loop optimises and how it validates (the loss and the batch kind).

  Attributes:
    name: for logs ("frames", "windows").
    train_keys: keys of a host-local train batch; each is sharded on its first axis.
    loss: loss(apply, params, batch_stats, batch, key) -> (scalar loss, {name: scalar} metrics with
      at least "accuracy", new batch_stats); traced inside the jitted train step. `params` is the
      whole trainable tree of the train state, `key` the step's dropout key.
    evaluate: evaluate(steps, params, batch_stats, eval_batches) -> {"accuracy", "loss", "count"}
      (host floats); the best checkpoint is the highest "accuracy".
    check_batch: check_batch(batch, local_batch, step) raises ValueError for a malformed batch.
    cnn_params: the CNN's nnx Param pure dict inside the trainable tree.
    images_per_example: frames per batch row (1 for frames, W for windows), for img/s.
    eval_at_start: also validate the step-0 state (a candidate for the best step: stage 3 starts
      from trained models and keeps them if fine-tuning does not help on validation).
  """
  name: str
  train_keys: tuple[str, ...]
  loss: Callable
  evaluate: Callable
  check_batch: Callable
  cnn_params: Callable[[Any], dict] = lambda params: params
  images_per_example: int = 1
  eval_at_start: bool = False


@dataclasses.dataclass
class TrainResult:
  """What train_and_evaluate returns. `model` holds the best checkpoint's weights, in eval mode."""
  model: nnx.Module
  best_step: int
  best_val_accuracy: float | None  # None without eval_batches (then the last step is the best).
  final_step: int
  history: list[dict]  # metrics.jsonl records: {"step", "kind": "train" | "eval", ...}.
  train_step_traces: int = 0  # Times the train step was traced in this call (1 when it trained).
  params: Any = None  # The best step's whole trainable tree (host arrays); stage 1: the CNN's.


def make_mesh(devices=None) -> Mesh:
  """A 1-D Mesh with the axis "data" over `devices` (default: all devices of all processes)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def learning_rate_schedule(train_config) -> optax.Schedule:
  """learning_rate * lr_decay_factor ** (step // lr_decay_every)."""
  return optax.exponential_decay(
      init_value=train_config.learning_rate, transition_steps=train_config.lr_decay_every,
      decay_rate=train_config.lr_decay_factor, staircase=True)


def weight_decay_mask(params: Any) -> Any:
  """True for conv and dense kernels (leaves named "kernel"), False for BN scale/bias and biases."""
  def is_kernel(path, _):
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) == "kernel"
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """Coupled L2 on kernels, then SGD with momentum on the staircase schedule."""
  return optax.chain(
      optax.add_decayed_weights(train_config.weight_decay, mask=weight_decay_mask),
      optax.sgd(learning_rate_schedule(train_config), momentum=train_config.momentum))


def _section(t) -> str:
  """The config section a loop config comes from, for error messages."""
  return t.get("section", "config.train") if hasattr(t, "get") else "config.train"


def _check_config(t):
  """Checks the loop's section (config.train or the one stage 3 builds from config.joint)."""
  for name in ("batch_size", "log_every", "eval_every", "checkpoint_every", "eval_batch_size",
               "lr_decay_every"):
    if int(t[name]) < 1:
      raise ValueError(f"{_section(t)}.{name}={t[name]} must be >= 1.")
  if int(t.num_steps) < 0:
    raise ValueError(f"{_section(t)}.num_steps={t.num_steps} must be >= 0.")
  if t.batch_size % jax.process_count():
    raise ValueError(f"{_section(t)}.batch_size={t.batch_size} must divide by the number of "
                     f"processes ({jax.process_count()}).")


class Steps:
  """The jitted train / eval / predict functions of one model on one mesh.

  `model` gives the structure (its weights are not used). Train state: {"params" (the objective's
  trainable tree; stage 1: the CNN's nnx Param pure dict), "batch_stats": nnx pure dict,
  "opt_state", "step": int32, "rng": uint32 key data}, replicated.
  `train(state, batch) -> (state, {"loss", "accuracy", ..., "learning_rate"})` donates the state;
  its loss is `objective.loss` (default FRAMES). `traces` counts how often it was traced.
  `apply` is the model as a function of its weights (see Apply).
  """

  def __init__(self, model: nnx.Module, tx, mesh: Mesh, input_size: int, schedule=None,
               objective: Objective | None = None):
    objective = objective or FRAMES
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P("data"))
    self.traces = 0
    graphdef, _, _, keys, counts, *rest = nnx.split(
        model, nnx.Param, nnx.BatchStat, nnx.RngKey, nnx.RngCount, ...)
    keys, counts = nnx.to_pure_dict(keys), nnx.to_pure_dict(counts)

    def apply(params, batch_stats, images, train, key=None):
      # Dropout: every RNG stream restarts from a key derived from `key` (count 0).
      stream_keys, stream_counts = keys, counts
      if key is not None:
        leaves, treedef = jax.tree.flatten(keys)
        stream_keys = jax.tree.unflatten(
            treedef, [jax.random.fold_in(key, i) for i in range(len(leaves))])
        stream_counts = jax.tree.map(jnp.zeros_like, counts)
      model = nnx.merge(graphdef, nnx.State(params), nnx.State(batch_stats),
                        nnx.State(stream_keys), nnx.State(stream_counts), *rest)
      out = model(models.preprocess(images, input_size), train=train)
      return out, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    self.apply = apply

    def train_step(state, batch):
      self.traces += 1
      key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

      def loss_fn(params):
        loss, metrics, batch_stats = objective.loss(apply, params, state["batch_stats"], batch, key)
        return loss, (metrics, batch_stats)

      (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state["params"])
      updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
      new_state = dict(state, params=optax.apply_updates(state["params"], updates),
                       batch_stats=batch_stats, opt_state=opt_state, step=state["step"] + 1)
      finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_state)
                                  if jnp.issubdtype(x.dtype, jnp.floating)]))
      metrics = dict(metrics, loss=loss, state_finite=finite)
      if schedule is not None:
        metrics["learning_rate"] = schedule(state["step"])
      return new_state, metrics

    def eval_step(params, batch_stats, batch):
      out, _ = apply(params, batch_stats, batch["image"], False)
      mask = batch["mask"]
      ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"])
      correct = (jnp.argmax(out["logits"], -1) == batch["label"]) & mask
      return {"correct": jnp.sum(correct), "loss_sum": jnp.sum(jnp.where(mask, ce, 0.0)),
              "count": jnp.sum(mask)}

    def predict_step(params, batch_stats, images):
      out, _ = apply(params, batch_stats, images, False)
      return {"logits": out["logits"], "features": out["features"]}

    r, b = self.replicated, self.batch_sharding
    self.train = jax.jit(train_step, in_shardings=(r, b), out_shardings=(r, r),
                         donate_argnums=0)
    self.eval = jax.jit(eval_step, in_shardings=(r, r, b), out_shardings=r)
    self.predict = jax.jit(predict_step, in_shardings=(r, r, b), out_shardings=b)

  def global_batch(self, local: dict, keys: tuple[str, ...], what: str) -> dict:
    """Host-local numpy batch -> global arrays sharded on the batch axis."""
    n = len(self.mesh.devices.flat)
    out = {}
    for k in keys:
      if k not in local:
        raise ValueError(f"{what}: a batch lacks {k!r} (has {sorted(local)}).")
      x = np.asarray(local[k])
      if x.dtype == np.int64:  # Labels from numpy default to int64; JAX uses int32.
        x = x.astype(np.int32)
      global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
      if global_shape[0] % n:
        raise ValueError(f"{what}: the global batch ({global_shape[0]}) must divide by the number "
                         f"of devices ({n}); change the batch size.")
      out[k] = jax.make_array_from_process_local_data(self.batch_sharding, x, global_shape)
    return out

  def replicate(self, tree: Any) -> Any:
    """Host (or single-device) arrays, the same on every process -> replicated global arrays."""
    def put(x):
      if isinstance(x, jax.Array) and x.sharding == self.replicated:
        return x
      x = np.asarray(x)
      return jax.make_array_from_process_local_data(self.replicated, x, x.shape)
    return jax.tree.map(put, tree)


def _pad_to(batch: dict, multiple: int) -> dict:
  """Pads a host-local eval batch with masked rows so its size divides by `multiple`."""
  b = len(batch["mask"])
  pad = -b % multiple
  if not pad:
    return batch
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    out[k] = np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
  return out


def _check_train_batch(batch: dict, local_batch: int, step: int):
  image, label = batch.get("image"), batch.get("label")
  if image is None or label is None:
    raise ValueError(f"train_batches: the batch of step {step} needs 'image' and 'label' "
                     f"(has {sorted(batch)}).")
  if (np.ndim(image) != 4 or np.shape(image)[0] != local_batch or np.shape(image)[-1] != 3
      or np.asarray(image).dtype != np.uint8 or np.shape(label) != (local_batch,)):
    raise ValueError(
        f"train_batches: step {step} gave image {np.shape(image)} {np.asarray(image).dtype}, "
        f"label {np.shape(label)}; expected uint8 [{local_batch}, S, S, 3] and [{local_batch}] "
        f"(config.train.batch_size // process_count).")


def evaluate(steps: Steps, params, batch_stats, eval_batches: EvalBatches) -> dict[str, float]:
  """Exact accuracy and mean loss over the real (mask True) rows of one pass of eval_batches()."""
  totals = None
  multiple = len(steps.mesh.devices.flat) // jax.process_count()
  for local in eval_batches():
    batch = steps.global_batch(_pad_to(local, max(multiple, 1)), ("image", "label", "mask"),
                               "eval_batches")
    sums = steps.eval(params, batch_stats, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  count = 0 if totals is None else int(totals["count"])
  if count == 0:
    raise ValueError("eval_batches gave no real (mask True) rows; check the validation split.")
  return {"accuracy": int(totals["correct"]) / count,
          "loss": float(totals["loss_sum"]) / count, "count": count}


def _frame_loss(apply: Apply, params, batch_stats, batch, key):
  """Stage 1: mean softmax cross-entropy of frames (train mode: BN batch statistics, dropout)."""
  out, batch_stats = apply(params, batch_stats, batch["image"], True, key)
  labels = batch["label"]
  loss = optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels).mean()
  return loss, {"accuracy": jnp.mean(jnp.argmax(out["logits"], -1) == labels)}, batch_stats


# Stage 1: batches {"image": uint8 [b, S, S, 3], "label": int32 [b]}, cross-entropy, frame accuracy.
FRAMES = Objective(name="frames", train_keys=("image", "label"), loss=_frame_loss,
                   evaluate=evaluate, check_batch=_check_train_batch)


def _weights(model: nnx.Module) -> tuple[dict, dict]:
  """(params, batch_stats) of an nnx model as pure dicts of arrays."""
  return (nnx.to_pure_dict(nnx.state(model, nnx.Param)),
          nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))


def _with_weights(model: nnx.Module, params: dict, batch_stats: dict) -> nnx.Module:
  """`model` (updated in place) with the given weights, in eval mode."""
  for variable_type, pure in ((nnx.Param, params), (nnx.BatchStat, batch_stats)):
    state = nnx.state(model, variable_type)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
  model.eval()
  return model


def _create_model(config, num_classes: int) -> nnx.Module:
  return models.create_model(config.model, num_classes,
                             nnx.Rngs(params=config.seed, dropout=config.seed))


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


def init_state(config, num_classes: int, mesh: Mesh | None = None, *, train_config=None,
               objective: Objective | None = None, initial: Callable | None = None):
  """A model, its jitted Steps on `mesh` (default: all devices) and the step-0 train state.

  train_config: the loop's section (default config.train: optimizer fields). objective: default
  FRAMES. initial: initial(model) -> (params, batch_stats) of step 0 (default: the fresh model's
  weights; stage 3 starts from stage 1 and 2).
  """
  train_config = config.train if train_config is None else train_config
  model = _create_model(config, num_classes)
  params, batch_stats = _weights(model) if initial is None else initial(model)
  tx = make_optimizer(train_config)
  steps = Steps(model, tx, mesh or make_mesh(), config.model.input_size,
                learning_rate_schedule(train_config), objective)
  init_params = steps.replicate(params)
  state = {"params": init_params, "batch_stats": steps.replicate(batch_stats),
           "opt_state": jax.jit(tx.init, out_shardings=steps.replicated)(init_params),
           "step": steps.replicate(np.int32(0)),
           "rng": steps.replicate(jax.random.key_data(jax.random.key(config.seed)))}
  return model, steps, state


def train_and_evaluate(config, workdir: str, *, num_classes: int, train_batches: TrainBatches,
                       eval_batches: EvalBatches | None = None, mesh: Mesh | None = None,
                       objective: Objective | None = None, train_config=None,
                       initial: Callable | None = None) -> TrainResult:
  """Trains (or resumes) in `workdir` with `objective`'s loss; see the module docstring.

  Args:
    config: the experiment config (uses seed, model, and train unless train_config is given).
    workdir: checkpoints/, best/, metrics.jsonl, tensorboard/ go here.
    num_classes: C, the number of expression classes.
    train_batches: train_batches(start_step) yields host-local batches of the objective's kind for
      steps start_step, start_step + 1, ...; b = batch_size // processes rows. Stage 1 (FRAMES):
      {"image": uint8 [b, S, S, 3], "label": int32 [b]}.
    eval_batches: None, or eval_batches() gives one pass over the validation set for
      objective.evaluate; FRAMES: {"image", "label", "mask": bool [b]} (padded rows masked out).
    mesh: a Mesh with the axis "data" (default: all devices).
    objective: the loss and batch kind (default FRAMES, stage 1).
    train_config: the loop's section: batch_size, num_steps, learning_rate, lr_decay_every,
      lr_decay_factor, momentum, weight_decay, log_every, eval_every, checkpoint_every,
      eval_batch_size (default config.train).
    initial: initial(model) -> (params, batch_stats) at step 0 (default: a fresh model). Not used
      when resuming from workdir/checkpoints.

  Returns:
    TrainResult; the model holds the CNN weights of the best validation accuracy, `params` the
    best step's whole trainable tree.
  """
  objective = objective or FRAMES
  t = config.train if train_config is None else train_config
  _check_config(t)
  num_steps = int(t.num_steps)
  local_batch = t.batch_size // jax.process_count()
  model, steps, state = init_state(config, num_classes, mesh, train_config=t, objective=objective,
                                   initial=initial)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=KEEP_CHECKPOINTS)
  best = checkpoint_lib.Checkpointer(os.path.join(workdir, "best"), keep=1,
                                     best_metric="val_accuracy")
  writer = metrics_writer.MetricWriter(workdir)
  try:  # Pending asynchronous saves complete (and files close) even when training fails.
    if (latest := ckpt.latest_step()) is not None:
      state = ckpt.restore(latest, checkpoint_lib.abstract_like(state))
      logging.info("Resumed from %s at step %d.", ckpt.directory, latest)
    step = int(state["step"])
    history = writer.truncate_after(step)
    best_step = best.best_step()
    best_acc = None
    if best_step is not None and (m := best.metrics(best_step)) is not None:
      best_acc = float(m["val_accuracy"])
    logging.info("Training (%s) %d -> %d steps on %d devices, global batch %d.", objective.name,
                 step, num_steps, steps.mesh.size, t.batch_size)

    def model_state(s):
      return {"params": s["params"], "batch_stats": s["batch_stats"]}

    def run_eval(s, at):
      nonlocal best_step, best_acc
      res = objective.evaluate(steps, s["params"], s["batch_stats"], eval_batches)
      history.append(writer.write(at, "eval", {"accuracy": res["accuracy"], "loss": res["loss"]}))
      logging.info("step %d: val accuracy %.4f, loss %.4f over %d frames.", at, res["accuracy"],
                   res["loss"], res["count"])
      if best_acc is None or res["accuracy"] > best_acc:
        best_step, best_acc = at, res["accuracy"]
        best.save(at, model_state(s), metrics={"val_accuracy": res["accuracy"]})

    if objective.eval_at_start and eval_batches is not None and step == 0 and best_step is None:
      run_eval(state, 0)
      writer.flush()
    pending, window = [], []  # Device metrics not yet checked; host metrics since the last log.
    clock_t, clock_step, timed_steps, timed_seconds = None, step, 0, 0.0
    batches = iter(train_batches(step)) if step < num_steps else iter(())
    while step < num_steps:
      try:
        local = next(batches)
      except StopIteration:
        raise ValueError(f"train_batches ran out at step {step} of {num_steps}; it must yield a "
                         "batch for every step.") from None
      objective.check_batch(local, local_batch, step)
      state, metrics = steps.train(state, steps.global_batch(local, objective.train_keys,
                                                             "train_batches"))
      pending.append((step, metrics))
      step += 1
      if clock_t is None:  # The first step compiles: the clock starts after it.
        jax.block_until_ready(state["step"])
        clock_t, clock_step = time.perf_counter(), step
      is_log, is_last = step % t.log_every == 0, step == num_steps
      is_eval = eval_batches is not None and step % t.eval_every == 0
      is_ckpt = step % t.checkpoint_every == 0
      if not (is_log or is_eval or is_ckpt or is_last):
        continue
      for s, m in jax.device_get(pending):
        if not (math.isfinite(m["loss"]) and m.pop("state_finite")):
          what = (f"loss is {m['loss']}" if not math.isfinite(m["loss"]) else
                  "loss is finite but the updated parameters are not")
          raise NonFiniteLossError(
              f"Training {what} at step {s} (the first bad one of steps {pending[0][0]}.."
              f"{pending[-1][0]}); nothing after step {s} was saved. Lower "
              f"{_section(t)}.learning_rate or check the data.")
        window.append(m)
      pending = []
      timed_steps += step - clock_step
      timed_seconds += time.perf_counter() - clock_t
      if is_log or is_last:
        mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        per_step = timed_seconds / timed_steps if timed_steps else math.nan
        mean["images_per_sec"] = t.batch_size * objective.images_per_example / per_step
        history.append(writer.write(step, "train", mean))
        logging.info("step %d/%d: loss %.4f, accuracy %.3f, lr %.3g | %.1f img/s, ETA %s", step,
                     num_steps, mean["loss"], mean["accuracy"], mean["learning_rate"],
                     mean["images_per_sec"], _fmt_time((num_steps - step) * per_step))
        window, timed_steps, timed_seconds = [], 0, 0.0
      if is_eval:
        run_eval(state, step)
      if is_ckpt or is_last:
        ckpt.save(step, state)
      writer.flush()
      clock_t, clock_step = time.perf_counter(), step  # Eval and checkpoint time is not training.

    final_step = step
    if eval_batches is not None and (best_step is None or not any(
        r["kind"] == "eval" and r["step"] == final_step for r in history)):
      run_eval(state, final_step)
    elif eval_batches is None:  # The last step counts as the best.
      best.save(final_step, model_state(state), metrics={"val_accuracy": None})
    best.wait()
    best_step = best.best_step()
    weights = best.restore(best_step, checkpoint_lib.abstract_like(model_state(state)))
    return TrainResult(
        model=_with_weights(model, objective.cnn_params(weights["params"]), weights["batch_stats"]),
        best_step=int(best_step), best_val_accuracy=best_acc, final_step=final_step,
        history=history, train_step_traces=steps.traces, params=jax.device_get(weights["params"]))
  finally:
    ckpt.close()
    best.close()
    writer.close()


def load_model(config, workdir: str, num_classes: int, which: str = "best",
               params_key: str | None = None) -> nnx.Module:
  """The trained CNN from workdir/best ("best") or workdir/checkpoints ("latest"), in eval mode.

  params_key: where the CNN's parameters sit in a checkpoint that holds more than the CNN (stage 3
  saves {"params": {"cnn": ..., "crf": ...}}: params_key="cnn"); None: {"params": CNN parameters}.
  """
  if which not in ("best", "latest"):
    raise ValueError(f"load_model(which={which!r}): use 'best' or 'latest'.")
  directory = os.path.join(workdir, "best" if which == "best" else "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No {which} checkpoint: {directory} does not exist; train stage 1 "
                            "first (train_and_evaluate with this workdir).")
  manager = checkpoint_lib.Checkpointer(
      directory, keep=1 if which == "best" else KEEP_CHECKPOINTS,
      best_metric="val_accuracy" if which == "best" else None)
  step = manager.best_step() if which == "best" else manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {directory}; train stage 1 first.")
  model = _create_model(config, num_classes)
  params, batch_stats = _weights(model)
  replicated = NamedSharding(make_mesh(), P())
  target = {"params": params if params_key is None else {params_key: params},
            "batch_stats": batch_stats}
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=replicated),
                          target)
  restored = manager.restore(step, abstract, partial=True)  # "latest" also has optimizer state.
  manager.close()
  logging.info("Loaded the %s checkpoint (step %d) from %s.", which, step, directory)
  params = restored["params"] if params_key is None else restored["params"][params_key]
  return _with_weights(model, params, restored["batch_stats"])


_INFERENCE_STEPS = {}


def _inference_steps(model: nnx.Module, mesh: Mesh, input_size: int) -> Steps:
  """Steps for eval-mode calls, cached by model structure: repeated predictions compile once."""
  key = (nnx.graphdef(model), mesh, int(input_size))
  if key not in _INFERENCE_STEPS:
    if len(_INFERENCE_STEPS) >= 8:
      _INFERENCE_STEPS.clear()
    _INFERENCE_STEPS[key] = Steps(model, None, mesh, input_size)
  return _INFERENCE_STEPS[key]


def predict_batches(model: nnx.Module, config, batches: Iterable[dict],
                    mesh: Mesh | None = None) -> dict[str, np.ndarray]:
  """Eval-mode outputs for the real rows of host-local batches {"image": uint8, "mask": bool}.

  Returns {"logits": [N, C] float32, "features": [N, F] float32}, N = real rows. Order: batch by
  batch; within a batch, process 0's rows, then process 1's, ... (every process returns all rows).
  """
  steps = _inference_steps(model, mesh or make_mesh(), config.model.input_size)
  params, batch_stats = steps.replicate(_weights(model))
  return predict_with(steps, params, batch_stats, batches)


def predict_with(steps: Steps, params, batch_stats,
                 batches: Iterable[dict]) -> dict[str, np.ndarray]:
  """predict_batches with given Steps and replicated CNN weights (e.g. inside a training run)."""
  multiple = max(len(steps.mesh.devices.flat) // jax.process_count(), 1)
  outs = {"logits": [], "features": []}
  for local in batches:
    if "mask" not in local:
      local = dict(local, mask=np.ones(len(local["image"]), bool))
    batch = steps.global_batch(_pad_to(local, multiple), ("image", "mask"), "predict_batches")
    out = steps.predict(params, batch_stats, batch["image"])
    out["mask"] = batch["mask"]
    if jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
    out = jax.device_get(out)
    for k in ("logits", "features"):
      outs[k].append(np.asarray(out[k], np.float32)[np.asarray(out["mask"], bool)])
  if not outs["logits"]:
    raise ValueError("predict_batches: `batches` was empty.")
  return {k: np.concatenate(v) for k, v in outs.items()}
