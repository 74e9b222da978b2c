"""Data parallelism for the DNI step: the `tf.distribute` helpers its engine calls on every replica.

With `R` replicas of local batch `b`, Keras divides each replica's mean loss
by `R` (`keras.src.losses.loss.scale_loss_for_distribution`, applied by every
compiled loss), and `optimizer.apply` sums the replicas' gradients (an
all-reduce in `TFOptimizer._all_reduce_sum_gradients`). The gradient `δ` that
arrives at an activation is then the per-example gradient divided by the
global batch `G = R·b`, so the DNI maths takes `N = G` (`global_batch`), and
the summed updates equal those of one replica on the whole global batch.

The engine calls the helpers below inside its step. Without a strategy
each is the identity or a direct call, so the single-device step is
unchanged; inside `strategy.run` (of any number of replicas):

* `sum_over_replicas` all-reduces the step's metrics (synthesizer losses,
  the parts of the cosine (`metrics.cosine_parts`), the counts of non-finite values), so every
  replica reports the global value and takes the same decisions;
* `in_cross_replica` runs the conditional part of the step (skip a
  non-finite step, update only the drawn modules) once for all replicas:
  TensorFlow cannot synchronise (all-reduce the gradients) inside a
  `tf.cond` taken in a replica context, so the conditions are evaluated in
  the cross-replica context and each branch runs the optimizers on every
  replica, as Keras' own `LossScaleOptimizer` does.

`make_strategy` builds the strategies the training job offers.

>>> global_batch(tf.zeros([8, 3])) is None     # no strategy: the local batch
True
"""

import keras
import tensorflow as tf
STRATEGIES = ("default", "mirrored", "multi_worker")


def replicas():
    """The number of replicas in sync of the current strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def in_replicas():
    """True inside `strategy.run` of a strategy (not the default one), even of one replica."""
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


def global_batch(x):
    """The normaliser `N` of the DNI maths for the local batch `x` (a tensor or a structure).

    None (each activation's own batch) without a strategy; `R·b` inside
    `strategy.run` with `R` replicas of local batch `b`.
    """
    if not in_replicas():
        return None
    return tf.cast(tf.shape(keras.tree.flatten(x)[0])[0] * replicas(), tf.float32)


def sum_over_replicas(value):
    """The sum of `value` (a tensor or a structure) over the replicas; `value` without them."""
    if not in_replicas() or not tf.nest.flatten(value):
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def mean_over_replicas(value):
    """The mean of `value` over the replicas (equal local batches: the global mean)."""
    if not in_replicas():
        return value
    return sum_over_replicas(value) / replicas()


def replica_share(value):
    """`value / R` inside `strategy.run` (Keras' scaling of a loss term); `value` without."""
    return value / replicas() if in_replicas() else value


def all_finite(sums):
    """Per part, whether its sum is finite on every replica (the same answer on each)."""
    finite = tf.math.is_finite(sums)
    if not in_replicas():
        return finite
    return tf.equal(sum_over_replicas(tf.cast(tf.logical_not(finite), tf.float32)), 0.0)


def _call(fn, *args):
    return fn(*args)


def in_cross_replica(fn, agreed, own):
    """Calls `fn(run, agreed, own)` once for all replicas; returns nothing.

    Args:
        fn: the conditional part of a step. It may take `tf.cond`s on the
            values in `agreed`, and runs what must happen on every replica
            (an optimizer's `apply`, which all-reduces the gradients) as
            `run(f, *args)`; those `args` are one replica's values.
        agreed: values that are equal on every replica (decided from
            all-reduced values); `fn` gets the first replica's.
        own: each replica's own values (its gradients), handed to `run`.

    Without a strategy this is `fn(run, agreed, own)` with `run(f, *args) = f(*args)`.
    """
    if not in_replicas():
        fn(_call, agreed, own)
        return

    def merged(strategy, agreed, own):
        def run(f, *args):
            strategy.extended.call_for_each_replica(f, args=args)

        fn(run, first_replica(strategy, agreed), own)

    tf.distribute.get_replica_context().merge_call(merged, args=(list(agreed), own))


def local_part(value):
    """This replica's slice of a global batch (inside `strategy.run`): equal slices in order.

    The global batch must be a multiple of the number of replicas.
    """
    context = tf.distribute.get_replica_context()
    count = context.num_replicas_in_sync
    if count == 1:
        return value
    value = tf.convert_to_tensor(value)
    size = tf.shape(value)[0] // count
    tf.debugging.assert_equal(tf.shape(value)[0] % count, 0, message=(
        f"the global batch must be a multiple of the {count} replicas"))
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * size
    return value[start:start + size]


def first_replica(strategy, values):
    """The first local replica's value of each per-replica value in a structure."""
    return tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0],
                                 values)


def check_created_in_scope(strategy, variables, name):
    """Raises ValueError naming `name` unless every variable was made in `strategy.scope()`."""
    outside = [v.path if hasattr(v, "path") else v.name for v in variables
               if not strategy.extended.variable_created_in_scope(getattr(v, "value", v))]
    if outside:
        raise ValueError(f"`{name}`: variables made outside `strategy.scope()` ({outside[0]}, "
                         f"...): build the model and the optimizers under `with "
                         f"strategy.scope():`.")


def make_strategy(name):
    """The `tf.distribute.Strategy` called `name`: one of `STRATEGIES`.

    "default": the default (one device); "mirrored": `MirroredStrategy` over
    the local devices; "multi_worker": `MultiWorkerMirroredStrategy`, whose
    cluster comes from the `TF_CONFIG` environment variable.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {name!r}.")
