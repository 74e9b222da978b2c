"""Copies of a Keras optimizer: a fresh one, or one that follows its learning rate.

>>> base = keras.optimizers.Adam(1e-3)
>>> copy = module_optimizer(base)
>>> base.learning_rate = 1e-4
>>> float(copy.learning_rate) == float(base.learning_rate)
True
>>> float(clone_optimizer(base).learning_rate) == float(base.learning_rate)
True
"""


def clone_optimizer(optimizer):
    """A new optimizer with `optimizer`'s configuration and none of its state."""
    return optimizer.__class__.from_config(optimizer.get_config())


def module_optimizer(optimizer):
    """A copy of `optimizer` whose learning rate is always `optimizer`'s current one.

    Its own state (moments, step count) advances only when it is applied: the
    optimizer of one decoupled module, stage or synthesizer that may skip steps.
    """
    config = {**optimizer.get_config(), "learning_rate": lambda: optimizer.learning_rate}
    return optimizer.__class__.from_config(config)
