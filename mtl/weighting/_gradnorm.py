"""GradNorm (Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018).

Task weights ``w_i`` (summing to ``T``) are learned so that the norms ``G_i = |grad_W w_i L_i|`` of the
weighted task gradients on the last shared layer ``W`` approach ``mean(G) * r_i ** alpha``, where
``r_i`` is task ``i``'s loss relative to its first-step loss, divided by the mean of those ratios.
The weight update uses the analytic gradient of ``sum |G_i - target_i|`` (target held constant, as in
the paper), a step of ``lr``, then renormalisation to sum ``T``. ``alpha = 0`` equalises the norms;
larger ``alpha`` pushes harder on tasks that train slowly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtl.errors import MtlError
from mtl.weighting._base import WeightingStrategy, flatten


def _layer_name(variable: Any) -> str:
    parts = str(getattr(variable, "path", variable.name)).split("/")
    return parts[-2] if len(parts) > 1 else ""


class GradNorm(WeightingStrategy):
    """Weights learned to balance the task gradient norms on the last shared layer."""

    key: ClassVar[str] = "gradnorm"
    uses_gradients: ClassVar[bool] = True

    def __init__(self, task_names: list[str], alpha: float = 1.5, lr: float = 0.025,
                 layers: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(task_names, **kwargs)
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.layers = list(layers) if layers is not None else None
        self.weights_now = {n: self.add_weight(shape=(), initializer="ones", trainable=False, name=f"{n}_weight",
                                            aggregation="only_first_replica")
                            for n in self.task_names}
        self.initial_losses = self.add_weight(shape=(len(self.task_names),), initializer="zeros", trainable=False,
                                              aggregation="only_first_replica",
                                              name="initial_losses")

    def task_weights(self, task_losses: dict[str, Any], step: Any) -> dict[str, Any]:
        return {n: self.weights_now[n] for n in self.task_names}

    def norm_indices(self, shared_vars: list[Any]) -> list[int]:
        """Positions of the declared last shared layers' variables among the shared ones; ``layers=None`` (a
        strategy used on its own) measures all shared variables. No fallback: declared layers none of which is
        shared by two tasks (or an empty declaration) are an error."""
        if self.layers is None:
            return list(range(len(shared_vars)))
        found = [i for i, v in enumerate(shared_vars) if _layer_name(v) in self.layers]
        if not found:
            raise MtlError(f"gradnorm needs the trunk's last shared layers; declared {self.layers or 'none'}, and "
                           "none of them is shared by two tasks", where="training.weighting")
        return found

    def combine(self, task_gradients: dict[str, list[Any]], shared_vars: list[Any],
                task_losses: dict[str, Any]) -> list[Any]:
        idx = self.norm_indices(shared_vars)
        norms = keras.ops.stack([
            keras.ops.sqrt(keras.ops.sum(keras.ops.square(flatten([task_gradients[n][i] for i in idx]))))
            for n in self.task_names])
        losses = keras.ops.stack([keras.ops.convert_to_tensor(task_losses[n]) for n in self.task_names])
        initial = keras.ops.where(self.initial_losses > 0, self.initial_losses, losses)
        self.initial_losses.assign(initial)
        ratio = losses / keras.ops.maximum(initial, 1e-12)
        relative = ratio / keras.ops.maximum(keras.ops.mean(ratio), 1e-12)
        target = keras.ops.mean(norms) * relative ** self.alpha
        weights = keras.ops.stack([self.weights_now[n].value for n in self.task_names])
        step = keras.ops.sign(norms - target) * norms / keras.ops.maximum(weights, 1e-12)
        updated = keras.ops.maximum(weights - self.lr * step, 1e-3)
        updated = updated * len(self.task_names) / keras.ops.sum(updated)
        for i, n in enumerate(self.task_names):
            self.weights_now[n].assign(updated[i])
        return super().combine(task_gradients, shared_vars, task_losses)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lr": self.lr, "layers": self.layers}
