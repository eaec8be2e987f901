"""The run's optimizer, with discriminative learning rates: a trainable text backbone learns at its own rate
(``model.backbone.learning_rate``, after a linear warm-up) while the trunk and heads keep ``training.learning_rate``;
``training.lr_schedule`` (cosine decay, reduction on plateau) scales both alike.

Why one optimizer with a per-variable rate and not two optimizers: checkpoints hold the model's and the optimizer's
variables (``mtl.training._checkpoints``) and ``model.keras`` is saved without the optimizer, so one optimizer keeps
both working unchanged. The backbone's rate is a function of the optimizer's step count (``iterations``), which is
checkpointed, so a resumed run continues the warm-up where it stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

log = logging.getLogger("mtl")

FINE_TUNING_RATE_LIMIT = 1e-3  # above it a trainable backbone usually collapses to a constant predictor


class BackboneRate:
    """Mixed into a Keras optimizer: the variables given to ``set_backbone`` update at the backbone's rate, every
    other variable at the optimizer's learning rate.

    The backbone's rate is ``rate * min(1, (step + 1) / warmup_steps) * current / base``: its own value after a
    linear warm-up, scaled as the run's schedule scales the trunk's rate (``current``: the optimizer's learning rate
    now, after cosine decay or a reduction on plateau; ``base``: ``training.learning_rate``)."""

    def set_backbone(self, variables: list[Any], rate: float, warmup_steps: int, base_rate: float) -> None:
        self._backbone_keys = {self._var_key(v) for v in variables}
        self.backbone_rate = float(rate)
        self.backbone_warmup_steps = int(warmup_steps)
        self.backbone_base_rate = float(base_rate)

    def backbone_learning_rate(self, current: Any = None) -> Any:
        """The backbone's rate at the current step (``current``: the trunk's rate now; default: this optimizer's)."""
        current = self._get_current_learning_rate() if current is None else current
        rate = keras.ops.cast(current, "float32") * (self.backbone_rate / self.backbone_base_rate)
        if self.backbone_warmup_steps <= 0:
            return rate
        step = keras.ops.cast(self.iterations + 1, "float32")
        return rate * keras.ops.minimum(1.0, step / float(self.backbone_warmup_steps))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        if self._var_key(variable) in getattr(self, "_backbone_keys", ()):
            learning_rate = self.backbone_learning_rate(learning_rate)
        return super().update_step(gradient, variable, learning_rate)


_KINDS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
          "rmsprop": keras.optimizers.RMSprop}
# Registered, so that a model file whose compile config names one of them loads (as the plain optimizer it extends:
# the backbone's variables are set again by ``make_optimizer`` when a run resumes).
_WITH_BACKBONE_RATE = {
    name: keras.saving.register_keras_serializable("mtl", f"BackboneRate{cls.__name__}")(
        type(f"BackboneRate{cls.__name__}", (BackboneRate, cls), {}))
    for name, cls in _KINDS.items()}


def make_optimizer(config: Any, steps_per_epoch: int, backbone_variables: list[Any] | None = None
                   ) -> keras.optimizers.Optimizer:
    """The optimizer of ``training`` (kind, rate, schedule, weight decay); with ``backbone_variables`` (a trainable
    backbone's), those learn at ``model.backbone.learning_rate`` after ``model.backbone.warmup`` of the steps."""
    t = config.training
    learning_rate: Any = t.learning_rate
    if t.lr_schedule.type == "cosine":
        warmup = int(round(t.lr_schedule.warmup_epochs * steps_per_epoch))
        total = t.epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else t.learning_rate,
            decay_steps=max(total - warmup, 1),
            alpha=t.lr_schedule.alpha,
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    kwargs: dict[str, Any] = {"learning_rate": learning_rate}
    if t.weight_decay is not None:
        kwargs["weight_decay"] = t.weight_decay
    if t.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    if not backbone_variables:
        return _KINDS[t.optimizer](**kwargs)
    backbone = config.model.backbone
    if backbone.learning_rate > FINE_TUNING_RATE_LIMIT:
        log.warning("model.backbone.learning_rate: %g fine-tunes the backbone above %g, which usually collapses it "
                    "to a constant predictor; 5e-5 is the default", backbone.learning_rate, FINE_TUNING_RATE_LIMIT)
    optimizer = _WITH_BACKBONE_RATE[t.optimizer](**kwargs)
    optimizer.set_backbone(backbone_variables, backbone.learning_rate,
                           int(round(backbone.warmup * t.epochs * steps_per_epoch)), t.learning_rate)
    return optimizer
