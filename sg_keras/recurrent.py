"""Recurrent DNI: synthetic gradients of the future at truncated-BPTT boundaries.

A Keras recurrent cell (e.g. `keras.layers.LSTMCell`, state `(h, c)`) is
unrolled in chunks of `truncation` steps; the state passes from one chunk to
the next (and from one batch to the next, when the caller carries it) with its
gradient cut. At the end of a chunk the synthesizer predicts the per-example
gradient of the future losses, `δ̂ = M(s_end)`, and the chunk's update sees it
*added* to the gradient arriving at its final state
(`dni_maths.applied_gradient(..., combine="add")`, i.e. `δ̂/N` as the output
gradient of `s_end`). `M(s_start)` of the chunk's first state regresses on the
gradient BPTT brings back to it: the chunk's own losses plus `δ̂/N` at its end,
back-propagated (bootstrapping), with `dni_maths.regression_target` and
`synthesizer_loss` under the normaliser `N` (the global batch).

With `aux=True` (DNI + Aux) a linear head on the core's output predicts, at
every step of a chunk, the synthetic gradient the chunk's end will produce;
its regression loss (weight `aux_weight`) trains the core as well.

With `synthesizer=None` it is plain truncated BPTT with the same truncation:
the baseline.

Example (3 binary outputs, per-step sigmoid cross-entropy):

>>> core = RecurrentDNI(keras.layers.LSTMCell(8), keras.layers.Dense(3), truncation=2,
...                     loss=per_step_sigmoid_bits, optimizer=keras.optimizers.Adam(1e-3))
>>> x = np.zeros((4, 5, 3), "float32"); y = np.ones((4, 5, 3), "float32")
>>> logs = core.train_sequence(x, y, np.ones((4, 5), "float32"))
>>> sorted(logs)                                            # doctest: +NORMALIZE_WHITESPACE
['aux_loss', 'loss', 'sg_loss', 'sg_norm']
"""

import math

import keras
import numpy as np
import tensorflow as tf

from sg_keras import dni_maths
from sg_keras.metrics import cosine_similarity
from sg_keras.optimizers import clone_optimizer
from sg_keras.synthesizers import DenseSynthesizer
from sg_keras.validation import ArgumentError, in_interval, int_at_least

# DNI + Aux's weight of the auxiliary loss: at 1.0 DNI + Aux solved shorter Copy and Repeat
# Copy sequences than DNI, at 0.1 at least as long on every run measured.
AUX_WEIGHT = 0.1


def per_step_sigmoid_bits(targets, logits):
    """Per-example sigmoid cross-entropy in **bits**, summed over the output features.

    The Copy / Repeat Copy loss: `targets` and `logits` are `(batch, features)`.
    """
    nats = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(nats, axis=-1) / math.log(2.0)


def per_step_softmax_bits(targets, logits):
    """Per-example softmax cross-entropy in **bits** (`targets`: integer classes, `(batch,)`)."""
    nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(targets, tf.int32),
                                                          logits=logits)
    return nats / math.log(2.0)


def _flat(state):
    return tf.concat(list(state), axis=-1)


def _split(flat, like):
    return tf.split(flat, [int(s.shape[-1]) for s in like], axis=-1)


class RecurrentDNI:
    """Trains a Keras recurrent cell with truncated BPTT and synthetic gradients of the future.

    Args:
        cell: a Keras RNN cell: `cell(x_t, states) -> (output, new_states)` with
            `cell.state_size` (e.g. `keras.layers.LSTMCell(units)`).
        readout: a Keras layer mapping the cell's output to per-step predictions.
        truncation: `T`, the number of steps per chunk (≥ 1).
        loss: `loss(targets_t, predictions_t) -> (batch,)` per-example loss of one step
            (e.g. `per_step_sigmoid_bits`). A chunk's loss is
            `Σ_t Σ_b w_bt·loss_bt / N` (summed over steps, averaged over examples).
        optimizer: updates the cell, the readout and the auxiliary head.
        synthesizer: the synthesizer of the (concatenated) state, a Keras layer with
            the `sg_keras.synthesizers` contract (zero-initialised output);
            "linear" (the default) is `DenseSynthesizer(hidden_layers=0)`; None is
            plain truncated BPTT.
        sg_optimizer: updates the synthesizer (default: a fresh copy of `optimizer`'s
            configuration).
        aux: DNI + Aux: also predict, at every step of a chunk, the synthetic
            gradient produced at its end.
        aux_weight: weight of the auxiliary regression loss (default `AUX_WEIGHT`,
            0.1: at 1.0 DNI + Aux fell behind DNI on Copy and Repeat Copy).
        context_dim: features of an optional per-example context given to the
            synthesizer (cDNI-style); None for none.
        sg_clip_norm: optional per-example L2 bound on each state part of `δ̂`; the
            update and the bootstrapped target both use the bounded `δ̂`. On a
            never-ending stream (char LM) unbounded bootstrapping can diverge:
            `bench/rnn.py` bounds DNI's `δ̂` at 1.0 by default.

    Every step takes the batch normaliser `N` explicitly (default: the local batch).

    Example (an LSTM, chunks of 2 steps, the linear state synthesizer):

    >>> core = RecurrentDNI(keras.layers.LSTMCell(8), keras.layers.Dense(2), truncation=2,
    ...                     loss=per_step_sigmoid_bits, optimizer=keras.optimizers.Adam(1e-3))
    >>> x, y = np.zeros((4, 6, 3), "float32"), np.zeros((4, 6, 2), "float32")
    >>> logs = core.train_sequence(x, y, np.ones((4, 6), "float32"))   # 3 chunks
    >>> sorted(logs)
    ['aux_loss', 'loss', 'sg_loss', 'sg_norm']
    """

    def __init__(self, cell, readout, *, truncation, loss, optimizer, synthesizer="linear",
                 sg_optimizer=None, aux=False, aux_weight=AUX_WEIGHT, context_dim=None,
                 sg_clip_norm=None):
        if not hasattr(cell, "state_size"):
            raise ArgumentError("cell", "must be a Keras RNN cell with a `state_size`")
        if not callable(loss):
            raise ArgumentError("loss", f"must be callable, got {loss!r}")
        self.cell, self.readout, self.loss = cell, readout, loss
        self.truncation = int_at_least(truncation, 1, "truncation")
        if isinstance(synthesizer, str):
            if synthesizer != "linear":
                raise ArgumentError("synthesizer",
                                    f"must be 'linear', None or a layer, got {synthesizer!r}")
            synthesizer = DenseSynthesizer(hidden_layers=0, name="state_synthesizer")
        if aux and synthesizer is None:
            raise ArgumentError("aux", "DNI + Aux needs a synthesizer (synthesizer=None)")
        self.synthesizer = synthesizer
        self.aux = bool(aux)
        self.aux_weight = in_interval(aux_weight, 0.0, math.inf, "aux_weight")
        self.context_dim = None if context_dim is None else int_at_least(context_dim, 1,
                                                                         "context_dim")
        self.sg_clip_norm = (None if sg_clip_norm is None else
                             in_interval(sg_clip_norm, 0.0, math.inf, "sg_clip_norm",
                                         low_open=True))
        self.optimizer = optimizer
        self.sg_optimizer = (clone_optimizer(optimizer)
                             if sg_optimizer is None and synthesizer is not None else sg_optimizer)
        sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
        self.state_sizes = [int(s) for s in sizes]
        self.aux_head = (keras.layers.Dense(sum(self.state_sizes), name="aux_head")
                         if self.aux else None)
        self._chunk_fn = tf.function(self._train_chunk, autograph=False)
        self._sequence_fn = tf.function(self._train_sequence, autograph=False)
        self._built = False

    # ----------------------------------------------------------------- building

    def initial_state(self, batch_size):
        """Zero state: one `(batch, size)` tensor per state part."""
        return [tf.zeros((batch_size, size)) for size in self.state_sizes]

    def build(self, input_dim):
        """Creates every variable (called by the first step)."""
        if self._built:
            return
        state = self.initial_state(1)
        out, _ = self.cell(tf.zeros((1, input_dim)), state)
        self.readout(out)
        if self.aux_head is not None:
            self.aux_head(out)
        if self.synthesizer is not None:
            context = None if self.context_dim is None else tf.zeros((1, self.context_dim))
            self.synthetic_gradient(state, context)
            self.sg_optimizer.build(self.synthesizer.trainable_variables)
        self.optimizer.build(self.core_variables)
        self._built = True

    @property
    def core_variables(self):
        """The variables the task loss trains: cell, readout and auxiliary head."""
        parts = [self.cell, self.readout] + ([self.aux_head] if self.aux_head else [])
        return [v for part in parts for v in part.trainable_variables]

    def synthetic_gradient(self, state, context=None):
        """`δ̂ = M(s)`: the per-example synthetic gradient of the future, one tensor per part."""
        kwargs = {} if context is None else {"context": context}
        return _split(self.synthesizer(_flat(state), **kwargs), state)

    # ----------------------------------------------------------------- one chunk

    def _unroll(self, state, x):
        outputs, predictions = [], []
        for t in range(x.shape[1]):
            out, state = self.cell(x[:, t], state, training=True)
            state = list(state) if isinstance(state, (list, tuple)) else [state]
            outputs.append(out)
            predictions.append(self.readout(out))
        return state, outputs, predictions

    def _chunk_loss(self, predictions, y, weights, normaliser):
        per_step = [self.loss(y[:, t], p) * weights[:, t] for t, p in enumerate(predictions)]
        return tf.reduce_sum(tf.add_n(per_step)) / normaliser

    def chunk_gradients(self, state, x, y, weights, *, bootstrap_end=1.0, regress=1.0,
                        context=None, normaliser=None):
        """Everything one chunk computes, without applying it (also what the tests inspect).

        Args:
            state: the chunk's first state (list of `(batch, size)`); its gradient is cut.
            x, y, weights: `(batch, T', ...)` inputs, targets and per-step loss weights.
            bootstrap_end: 1.0 adds `δ̂ = M(s_end)` at the end; 0.0 when the sequence
                ends here (there is no future).
            regress: 1.0 trains `M(s_start)`; 0.0 skips it (e.g. at an episode start).
            context: optional `(batch, context_dim)` synthesizer context.
            normaliser: `N` (default: the local batch).

        Returns a dict: `state` (final, gradient cut), `core_gradients`,
        `sg_gradients`, `loss`, `sg_loss`, `aux_loss`, `synthetic_end` (`δ̂`, per part),
        `target` (`N·∂/∂s_start`, per part), `synthetic_start`.
        """
        state = [tf.stop_gradient(s) for s in state]
        n = dni_maths.local_batch(x) if normaliser is None else tf.cast(normaliser, x.dtype)
        core = self.core_variables
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(state)
            end, outputs, predictions = self._unroll(state, x)
            loss = self._chunk_loss(predictions, y, weights, n)
            objective = loss
            result = {"aux_loss": tf.zeros(()), "sg_loss": tf.zeros(())}
            if self.synthesizer is not None:
                synthetic_end = [tf.stop_gradient(g) * bootstrap_end
                                 for g in self.synthetic_gradient(end, context)]
                synthetic_start = self.synthetic_gradient(state, context)
                result.update(synthetic_end=synthetic_end, synthetic_start=synthetic_start)
                if self.aux:
                    aux = tf.add_n([dni_maths.synthesizer_loss(self.aux_head(o),
                                                               _flat(synthetic_end), n)
                                    for o in outputs]) / len(outputs)
                    result["aux_loss"] = aux
                    objective = objective + self.aux_weight * aux
        if self.synthesizer is None:
            grads = tape.gradient(objective, core)
        else:
            # δ̂/N is added to whatever the chunk's own losses send to s_end: the tape
            # sums the output gradient of `end` with the gradient it receives in the chunk.
            arriving = [dni_maths.applied_gradient(g, tf.zeros_like(g), n, combine="add",
                                                   clip_norm=self.sg_clip_norm)
                        for g in synthetic_end]
            ones = [tf.ones_like(loss)]
            grads = tape.gradient([objective] + end, core, output_gradients=ones + arriving)
            # What BPTT brings back to the first state: the chunk's task losses plus
            # δ̂/N at its end (bootstrapping); the auxiliary loss is not a task loss.
            start_grads = tape.gradient([loss] + end, state, output_gradients=ones + arriving,
                                        unconnected_gradients="zero")
            target = [dni_maths.regression_target(g, n) for g in start_grads]
            result["sg_loss"] = regress * tf.add_n(
                [dni_maths.synthesizer_loss(p, t, n) for p, t in zip(synthetic_start, target)])
            result["sg_gradients"] = tape.gradient(
                synthetic_start, self.synthesizer.trainable_variables,
                output_gradients=[regress * dni_maths.synthesizer_output_gradient(p, t, n)
                                  for p, t in zip(synthetic_start, target)])
            result["target"] = target
        del tape
        result.update(state=[tf.stop_gradient(s) for s in end], core_gradients=grads, loss=loss)
        return result

    def _train_chunk(self, state, x, y, weights, bootstrap_end, regress, context, normaliser):
        result = self.chunk_gradients(state, x, y, weights, bootstrap_end=bootstrap_end,
                                      regress=regress, context=context, normaliser=normaliser)
        self.optimizer.apply_gradients(zip(result["core_gradients"], self.core_variables))
        logs = {"loss": result["loss"], "sg_loss": result["sg_loss"],
                "aux_loss": result["aux_loss"], "sg_norm": tf.zeros(())}
        if self.synthesizer is not None:
            self.sg_optimizer.apply_gradients(zip(result["sg_gradients"],
                                                  self.synthesizer.trainable_variables))
            norms = tf.norm(_flat(result["synthetic_end"]), axis=-1)
            logs["sg_norm"] = tf.reduce_mean(norms)
        return result["state"], logs

    def _train_sequence(self, state, x, y, weights, fresh, ends, context, normaliser):
        """Every chunk of `x` in turn, one update each (one graph per sequence length)."""
        starts = list(range(0, int(x.shape[1]), self.truncation))
        totals = {}
        for i, start in enumerate(starts):
            part = slice(start, start + self.truncation)
            last, first = float(i == len(starts) - 1), float(i == 0)
            state, logs = self._train_chunk(state, x[:, part], y[:, part], weights[:, part],
                                            1.0 - ends * last, 1.0 - fresh * first, context,
                                            normaliser)
            totals = {k: totals.get(k, 0.0) + v for k, v in logs.items()}
        # the sequence loss is the sum of its chunks' losses; the rest are chunk means
        return state, {k: v if k == "loss" else v / len(starts) for k, v in totals.items()}

    def _inputs(self, x, y, weights, context, normaliser):
        x, y, weights = (tf.convert_to_tensor(np.asarray(a, "float32")) for a in (x, y, weights))
        self.build(int(x.shape[-1]))
        n = dni_maths.local_batch(x) if normaliser is None else tf.constant(float(normaliser))
        if context is not None:
            context = tf.convert_to_tensor(np.asarray(context, "float32"))
        return x, y, weights, context, n

    def train_chunk(self, state, x, y, weights, *, last=False, first=False, context=None,
                    normaliser=None):
        """One update on one chunk; returns `(final state, logs)`.

        `last`: the sequence ends with this chunk (no synthetic gradient at its end);
        `first`: its first state is an episode start (no regression there).
        """
        x, y, weights, context, n = self._inputs(x, y, weights, context, normaliser)
        return self._chunk_fn(list(state), x, y, weights, tf.constant(0.0 if last else 1.0),
                              tf.constant(0.0 if first else 1.0), context, n)

    def train_sequence(self, x, y, weights, *, state=None, context=None, normaliser=None,
                       ends=True):
        """Trains on `(batch, L, ...)` sequences chunk by chunk; returns logs averaged over chunks.

        One update per chunk of `truncation` steps, all of them in one compiled
        graph per sequence length `L` (the `loss` log is the sequence's: the sum
        of its chunks'). `state=None` starts every sequence from the zero state
        (an episode start); `ends=False` means the stream continues after this
        batch (char LM): the last chunk then bootstraps too. The final state is
        `self.last_state`.
        """
        x, y, weights, context, n = self._inputs(x, y, weights, context, normaliser)
        fresh = state is None
        state = self.initial_state(int(x.shape[0])) if fresh else list(state)
        self.last_state, logs = self._sequence_fn(state, x, y, weights,
                                                  tf.constant(float(fresh)),
                                                  tf.constant(float(ends)), context, n)
        return {k: float(v) for k, v in logs.items()}

    # ----------------------------------------------------------------- evaluation

    def predict_sequence(self, x, state=None):
        """Per-step predictions `(batch, L, outputs)` and the final state (no training)."""
        x = tf.convert_to_tensor(np.asarray(x, "float32"))
        self.build(int(x.shape[-1]))
        state = self.initial_state(int(x.shape[0])) if state is None else list(state)
        predictions = []
        for start in range(0, int(x.shape[1]), self.truncation):   # one traced chunk length
            state, _, chunk = self._predict_fn(state, x[:, start:start + self.truncation])
            predictions += chunk
        return tf.stack(predictions, axis=1), state

    @tf.function(autograph=False)
    def _predict_fn(self, state, x):
        state, outputs, predictions = self._unroll(state, x)
        return state, outputs, predictions

    def boundary_gradients(self, x, y, weights, state=None, context=None, normaliser=None):
        """Synthetic vs true future gradients at each chunk boundary of full sequences.

        Unrolls the whole sequence in one tape (full BPTT), and at every chunk
        boundary `k` returns `(δ̂_k, N·∂L/∂s_k)`: the gradient of all the
        sequence's losses at `s_k`, which is that of the losses after `k` only.
        """
        x, y, weights = (tf.convert_to_tensor(np.asarray(a, "float32")) for a in (x, y, weights))
        self.build(int(x.shape[-1]))
        n = dni_maths.local_batch(x) if normaliser is None else tf.constant(float(normaliser))
        state = self.initial_state(int(x.shape[0])) if state is None else list(state)
        boundaries, predictions = [], []
        with tf.GradientTape() as tape:
            for start in range(0, int(x.shape[1]), self.truncation):
                if start:   # a copy: the gradient of the future only, not of h's own output
                    state = [tf.identity(s) for s in state]
                    boundaries.append(state)
                state, _, chunk = self._unroll(state, x[:, start:start + self.truncation])
                predictions += chunk
            loss = self._chunk_loss(predictions, y, weights, n)
        true = tape.gradient(loss, boundaries)
        return [(_flat(self.synthetic_gradient(s, context)),
                 dni_maths.regression_target(_flat(t), n)) for s, t in zip(boundaries, true)]

    def boundary_cosines(self, x, y, weights, state=None, context=None, normaliser=None):
        """`cos(δ̂_k, true future gradient)` at each chunk boundary `k`, as floats.

        The pairs are `boundary_gradients`'; each cosine is over the whole batch.
        """
        return pair_cosines(self.boundary_gradients(x, y, weights, state, context, normaliser))


def pair_cosines(pairs):
    """The cosine of each `(synthetic, true)` pair of `boundary_gradients`, as floats."""
    return [float(cosine_similarity(synthetic, true)) for synthetic, true in pairs]
