"""`LogWindow`: a training step's logs summed on the device until the host asks for them.

A trainer adds each step's logs inside its traced step; a training loop reads
the means at its log points only, so no step waits for the host. NaN values
(e.g. `cosine/LAYER` on steps that do not measure) are left out of a mean.

>>> window = LogWindow()
>>> for value in (1.0, float("nan"), 3.0):
...     _ = window.add({"loss": tf.constant(value)})
>>> window.read()
{'loss': 2.0}
>>> window.read()
{}
"""

import tensorflow as tf


class LogWindow:
    """Running sums and counts of every log key since the last `read()`."""

    def __init__(self):
        self._sums, self._counts = {}, {}

    def add(self, logs):
        """Adds one step's `{key: scalar tensor}` (inside or outside a tf.function); returns it."""
        for key, value in logs.items():
            if key not in self._sums:
                with tf.init_scope():   # created eagerly, also when first called while tracing
                    self._sums[key] = tf.Variable(0.0, trainable=False)
                    self._counts[key] = tf.Variable(0.0, trainable=False)
            value = tf.cast(value, tf.float32)
            seen = tf.logical_not(tf.math.is_nan(value))
            self._sums[key].assign_add(tf.where(seen, value, 0.0))
            self._counts[key].assign_add(tf.cast(seen, tf.float32))
        return logs

    def read(self):
        """The mean of every key over the steps since the last read (keys with no value left
        out), as Python floats; then starts a new window."""
        means = {}
        for key, total in self._sums.items():
            count = float(self._counts[key].numpy())
            if count:
                means[key] = float(total.numpy()) / count
            total.assign(0.0)
            self._counts[key].assign(0.0)
        return means
