"""The trainer contracts: what a training loop may call on a trainer, whichever it is.

`Trainer` is met by `DNITrainer`, `PipelinedTrainer` and
`CompleteUnlockTrainer`: one batch per `train_step`, a `tf.train.Checkpoint`
of all the state, a step counter, the NaN/Inf checks and the log window. A
loop written against it (`isinstance(trainer, Trainer)`) needs to know no
trainer class.

`SequenceTrainer` is met by `RecurrentDNI`, which differs: it trains on
whole sequences (`train_sequence(x, y, weights)`, optionally carrying the
recurrent state), keeps no step counter, no log window and no checkpoint of
its own (the loop checkpoints its parts with the data position), and has no
NaN/Inf guard.

Both are `typing.Protocol`s checked at run time: `isinstance` checks that the
members exist, not their signatures.

>>> class Stub:
...     options = checkpoint = iterations = log_window = None
...     def train_step(self, x, y): return {}
...     def evaluate(self, x, y=None, batch_size=1024): return {}
...     def check_finite(self): pass
...     def nonfinite_variables(self): return []
...     def inspect(self, x, y): return {}
>>> isinstance(Stub(), Trainer), isinstance(Stub(), SequenceTrainer)
(True, False)
"""

from typing import Protocol, runtime_checkable


@runtime_checkable
class Trainer(Protocol):
    """A trainer of a feed-forward model, one batch per step.

    Attributes:
        options: the `DNIOptions` it trains with.
        checkpoint: a `tf.train.Checkpoint` of every piece of training state
            (model, optimizers, the step counter, random state, in-flight
            activations); restoring it continues the run exactly.
        iterations: the number of training steps made (refused ones included),
            an int64 `tf.Variable` (part of `checkpoint`, under the key `step`).
        log_window: a `LogWindow` to which every step adds its logs on the
            device; a loop reads the means at its log points.
    """

    options: object
    checkpoint: object
    iterations: object
    log_window: object

    def train_step(self, x, y):
        """One training step on a batch; a dict of scalar tensors (not waited for)."""

    def evaluate(self, x, y=None, batch_size=1024):
        """`{"loss": float, "accuracy": float}` over arrays or a batched dataset."""

    def check_finite(self):
        """Raises `NonFiniteError` if a step was refused for NaN/Inf (a host sync); does
        nothing for a trainer without a guard."""

    def nonfinite_variables(self):
        """Paths of the state variables holding NaN/Inf (check before a checkpoint)."""

    def inspect(self, x, y):
        """`{layer: {"activation", "synthetic", "true"}}` numpy arrays of one batch, changing
        nothing; `{}` where there is nothing to compare."""


@runtime_checkable
class SequenceTrainer(Protocol):
    """A recurrent trainer: truncated BPTT over whole sequences.

    Attributes:
        optimizer: updates the core.
        synthesizer: the state's synthesizer (None: plain truncated BPTT).
    """

    optimizer: object
    synthesizer: object

    def initial_state(self, batch_size):
        """The zero recurrent state of a batch."""

    def train_sequence(self, x, y, weights, *, state=None, context=None, normaliser=None,
                       ends=True):
        """Trains on one batch of sequences, chunk by chunk; the logs (and the last state when
        the caller carries it)."""

    def predict_sequence(self, x, state=None):
        """The per-step predictions of a batch of sequences."""

    def boundary_cosines(self, x, y, weights, state=None, context=None, normaliser=None):
        """The cosine between the synthetic and the true gradient at every chunk boundary."""
