"""Thin wrapper over orbax CheckpointManager for pytrees of arrays (nnx pure dicts, optax states).

Retention uses orbax preservation policies (`max_to_keep` is deprecated in orbax 0.12): LatestN for
the rolling checkpoints, BestN on a named metric for the best one. Restores go into abstract targets
(jax.ShapeDtypeStruct with shardings), so a checkpoint loads onto any device count. orbax only ever
deletes step folders inside its own directory.
"""
import math
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


def abstract_like(tree: Any) -> Any:
  """jax.ShapeDtypeStruct (with the array's sharding) for every array leaf of `tree`."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, tree)


class Checkpointer:
  """Saves and restores one pytree per step under `directory`.

  Args:
    directory: where the step folders live (created if missing).
    keep: how many checkpoints to keep (the latest, or the best when `best_metric` is set).
    best_metric: rank checkpoints by `metrics[best_metric]` (higher is better; None ranks lowest;
      ties go to the later step) instead of recency. Every save then needs `metrics`.
  """

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = None):
    if keep < 1:
      raise ValueError(f"Checkpointer(keep={keep}): keep at least one checkpoint.")
    self.directory = os.path.abspath(os.fspath(directory))
    self.best_metric = best_metric
    best_fn = None
    if best_metric is None:
      policy = checkpoint_managers.LatestN(n=keep)
    else:
      def best_fn(metrics):
        value = metrics.get(best_metric)
        return -math.inf if value is None else float(value)
      policy = checkpoint_managers.BestN(get_metric_fn=best_fn, n=keep,
                                         keep_checkpoints_without_metrics=False)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=best_fn, best_mode="max", create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest metric (the latest one without `best_metric`); None if empty."""
    return self._manager.best_step()

  def metrics(self, step: int) -> Mapping[str, Any] | None:
    return self._manager.metrics(step)

  def save(self, step: int, tree: Any, metrics: Mapping[str, Any] | None = None) -> bool:
    """Saves `tree` (asynchronously) as `step`; False when that step already exists."""
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(tree), metrics=metrics, force=True)

  def restore(self, step: int, abstract_tree: Any, *, partial: bool = False) -> Any:
    """Restores `step` into the structure, dtypes and shardings of `abstract_tree`.

    partial: `abstract_tree` may name a subset of the saved top-level keys (the rest is not read).
    """
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"No checkpoint for step {step} in {self.directory} (have "
                              f"{self.all_steps()}).")
    if partial:
      args = ocp.args.PyTreeRestore(
          item=abstract_tree, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_tree),
          partial_restore=True)
    else:
      args = ocp.args.StandardRestore(abstract_tree)
    return self._manager.restore(step, args=args)

  def wait(self):
    """Blocks until asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
