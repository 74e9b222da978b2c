"""`DNIModel`: Keras-native training with synthetic gradients.

`model.compile(...)` and `model.fit(...)` train a `DNIModel` the way
`DNITrainer` does: its `train_step` is the same DNI step (`sg_keras.engine`),
so every `DecoupledLayer` updates from its synthetic gradient and every
synthesizer learns by regression, with its own optimizer. Evaluation,
prediction, callbacks and `.keras` saving are Keras' own.
"""

import math

import keras
import tensorflow as tf

from sg_keras import distribute, keras_compat
from sg_keras.engine import StepEngine, has_value
from sg_keras.keras_compat import Functional, functional_init_arguments
from sg_keras.model_parts import check_precision, context_dim_of, decoupled_layers
from sg_keras.optimizers import clone_optimizer
from sg_keras.options import DNIOptions, Mode


def _get_optimizer(identifier, name):
    """`keras.optimizers.get`, with errors naming the argument `name`."""
    try:
        return keras.optimizers.get(identifier)
    except ValueError as error:
        raise ValueError(f"`{name}`: {error}") from error


class _LayerMetrics:
    """Running means of the per-layer step metrics, `sg_loss/LAYER` and `cosine/LAYER`.

    They are kept out of `model.metrics`, so `evaluate()` reports exactly the
    compiled metrics. A mean is made the first time its key appears, which is
    while the train step is traced, hence under `tf.init_scope` (its variables
    are created eagerly, outside the traced graph). Under tf.distribute the
    values are global (summed over the replicas by the engine) and each
    replica adds them to the same local mean, which leaves the mean as it is.
    A mean that has seen no
    value reads NaN: e.g. the cosine in an epoch without a measured step.
    """

    def __init__(self):
        self._means = {}

    def update(self, out):
        """Adds the values of a `StepOutput` `out` (the cosines only if it measured them, the
        synthesizer losses only if the synthesizers trained)."""
        for key, value in out.metrics.items():
            if key not in self._means:
                with tf.init_scope():
                    self._means[key] = keras.metrics.Mean(name=key)
            self._means[key].update_state(
                value, sample_weight=tf.cast(has_value(key, out), value.dtype))

    def results(self):
        return {key: tf.where(mean.count > 0, mean.result(), math.nan)
                for key, mean in self._means.items()}

    def reset(self):
        for mean in self._means.values():
            mean.reset_state()


class DNIModel(keras.Model):
    """A `keras.Model` whose `fit` trains its `DecoupledLayer`s with synthetic gradients.

    Use it like `keras.Model`: `DNIModel(inputs, outputs)` builds a functional
    model (a `FunctionalDNIModel`), subclassing `DNIModel` instead of
    `keras.Model` gives a subclassed one, and `DNIModel.from_model(model)`
    turns a built Sequential or functional model into one that shares its
    layers. `compile` takes the DNI options next to Keras' own; then `fit`
    trains, per step and exactly as `DNITrainer.train_step`, the network with
    `optimizer` (decoupled modules from their synthetic gradients) and the
    synthesizers with `sg_optimizer`. Outside training a `DecoupledLayer` is
    its wrapped layer, so `evaluate`, `predict` and `model(x)` are those of the
    plain model.

    Training logs hold the compiled metrics plus, per decoupled layer, the
    epoch mean of `sg_loss/LAYER` and, with `measure_every`, of
    `cosine/LAYER` (NaN in an epoch without a measured step); `History`,
    `TensorBoard` and `EarlyStopping` see them like any other metric.

    The step number that schedules `true_gradient_every`, `measure_every` and
    `synth_update_every` is `optimizer.iterations`, read inside the traced
    step, which switches (`tf.switch_case`) between one traced variant per
    kind of step.

    A saved `.keras` file holds the compile options (`mode`, `sg_target`, ...,
    the `sg_optimizer` configuration) and both optimizers' state, so a loaded
    model resumes training where it stopped. A subclassed `DNIModel` saves as
    any subclassed Keras model does (register it and give it a `get_config`).

    Example (a Sequential model with two `DecoupledLayer`s, "block1" and "block2"):

    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           DecoupledLayer(keras.layers.Dense(8), name="block1"),
    ...                           DecoupledLayer(keras.layers.Dense(8), name="block2"),
    ...                           keras.layers.Dense(3)])
    >>> x, y = np.ones((8, 4), "float32"), np.arange(8) % 3
    >>> dni = DNIModel.from_model(model)
    >>> dni.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
    ...             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...             sg_optimizer=keras.optimizers.Adam(1e-4), measure_every=1)
    >>> history = dni.fit(x, y, batch_size=4, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'cosine/block1', 'cosine/block2', 'loss', 'sg_loss/block1', 'sg_loss/block2']

    A subclassed model derives from `DNIModel`:

    >>> class Net(DNIModel):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.block = DecoupledLayer(keras.layers.Dense(256, activation="relu"))
    ...         self.head = keras.layers.Dense(10)
    ...     def call(self, x, training=None):
    ...         return self.head(self.block(x, training=training))
    >>> Net()(np.ones((2, 4))).shape
    TensorShape([2, 10])
    """

    def __new__(cls, *args, **kwargs):
        if cls is DNIModel and functional_init_arguments(args, kwargs):
            return FunctionalDNIModel.__new__(FunctionalDNIModel, *args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        if functional_init_arguments(args, kwargs) and not isinstance(self, Functional):
            # keras.Model would rebase the class (DNIModel included) onto Functional.
            raise ValueError(
                f"`inputs` and `outputs` given to the subclass {type(self).__name__!r} of "
                "DNIModel: a functional-style subclass must derive from FunctionalDNIModel.")
        super().__init__(*args, **kwargs)
        self._layer_metrics = _LayerMetrics()

    @staticmethod
    def from_model(model):
        """A `DNIModel` on the layers of a built Sequential or functional model.

        The two models share their layers, hence their weights.

        >>> dni = DNIModel.from_model(keras.Sequential([keras.Input((8,)),
        ...                                             DecoupledLayer(keras.layers.Dense(4))]))
        >>> type(dni).__name__
        'FunctionalDNIModel'
        """
        if not isinstance(model, (keras.Sequential, Functional)) or not model.built:
            raise ValueError(
                f"`model` must be a built Sequential or functional keras.Model, got {model!r}; "
                "for a subclassed model, subclass sg_keras.DNIModel instead of keras.Model.")
        if isinstance(model, Functional):    # its input structure, e.g. one tensor, not [tensor]
            return FunctionalDNIModel(model.input, model.output, name=model.name)
        return FunctionalDNIModel(model.inputs[0], model.outputs[0], name=model.name)

    def compile(self, optimizer="rmsprop", loss=None, *, sg_optimizer=None, options=None,
                mode=None, sg_target=None, true_gradient_every=None, measure_every=None,
                bp_lambda=None, update_prob=None, sg_clip_norm=None, on_nonfinite=None,
                synth_update_every=None, seed=0, **kwargs):
        """Configures training; the DNI options are those of `DNITrainer`.

        Args:
            optimizer, loss: as for `keras.Model.compile`. The loss must be a
                batch mean (Keras' default reduction).
            sg_optimizer: optimizer (or its name) of the synthesizers. Default:
                a fresh copy of `optimizer`'s configuration.
            options: a `DNIOptions` holding `mode` and the options below at
                once; the keywords are a convenience for the same (give one
                or the other, not both). Left out (None), each takes its
                `DNIOptions` default, and `mode` the one below.
            mode: "backprop", "dni" or "cdni" (the one-hot labels are the
                synthesizers' context). Default: "cdni" if the DecoupledLayers
                have a `context_dim`, "dni" if they have not, "backprop" if
                there are none.
            sg_target, true_gradient_every, measure_every, bp_lambda,
            update_prob, sg_clip_norm, on_nonfinite, synth_update_every, seed: as for
                `DNITrainer`. With `on_nonfinite="raise"`, `fit` raises
                `NonFiniteError` and the weights are those before the bad step.
            **kwargs: the other `keras.Model.compile` arguments (`metrics`,
                `loss_weights`, `run_eagerly`, `jit_compile`, ...).

        Raises:
            ValueError: naming the argument that is invalid or does not fit
                the model; float16 layers (`mixed_float16`) and loss scaling
                (`LossScaleOptimizer`) are not supported: `mixed_bfloat16`
                trains without it.

        Example:

        >>> model = DNIModel.from_model(keras.Sequential([
        ...     keras.Input((4,)), DecoupledLayer(keras.layers.Dense(8)), keras.layers.Dense(3)]))
        >>> model.compile(optimizer="adam", metrics=["accuracy"],
        ...               loss="sparse_categorical_crossentropy", true_gradient_every=100)
        """
        check_precision(self)
        layers = decoupled_layers(self)
        context_dim = context_dim_of(self)
        if mode is None and options is None:
            mode = Mode.BACKPROP if not layers else Mode.DNI if context_dim is None else Mode.CDNI
        options = DNIOptions.of(
            options, mode=mode, sg_target=sg_target, true_gradient_every=true_gradient_every,
            measure_every=measure_every, bp_lambda=bp_lambda, update_prob=update_prob,
            sg_clip_norm=sg_clip_norm, on_nonfinite=on_nonfinite,
            synth_update_every=synth_update_every)
        options.check_layers(layers, context_dim)
        optimizer = _get_optimizer(optimizer, "optimizer")
        sg_optimizer = (clone_optimizer(optimizer) if sg_optimizer is None
                        else _get_optimizer(sg_optimizer, "sg_optimizer"))
        if sg_optimizer is optimizer:
            raise ValueError("`sg_optimizer` must be another optimizer object than `optimizer`: "
                             "each keeps its own state and step count.")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "`optimizer`: loss scaling is not supported by DNIModel (the synthesizers would "
                "regress on scaled gradients); pass an unwrapped optimizer, and use "
                "mixed_bfloat16 rather than mixed_float16 for mixed precision.")
        self.sg_optimizer = sg_optimizer
        self._dni_options = options
        self._dni_seed = int(seed)
        self._engine = None
        self._layer_metrics = _LayerMetrics()
        if self.built:
            self._make_engine()

    def _make_engine(self):
        """The step engine; its optimizers' state is part of the saved model."""
        # variables (seed, guard, module optimizers) are made eagerly, in the strategy's scope
        with tf.init_scope(), self.distribute_strategy.scope():
            self._engine = StepEngine(self, self._dni_options, self.optimizer, self.sg_optimizer,
                                      seed=self._dni_seed)
        self.module_optimizers = self._engine.module_optimizers
        return self._engine

    @property
    def dni_options(self):
        """The compiled `DNIOptions`."""
        return self._dni_options

    def train_step(self, data):
        """One DNI step on a batch, as `DNITrainer.train_step`; returns the logs."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not self.built:  # create every variable before the step is traced
            self(x, training=False)
        engine = self._engine or self._make_engine()

        def loss_fn(y, y_pred):
            return self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)

        out = engine.step(x, y, self.optimizer.iterations, loss_fn, distribute.global_batch(x))
        self._layer_metrics.update(out)
        # Under tf.distribute Keras' loss is this replica's mean / R: report the mean.
        loss = out.loss * distribute.replicas() if distribute.in_replicas() else out.loss
        keras_compat.loss_tracker(self).update_state(
            loss, sample_weight=tf.shape(keras.tree.flatten(x)[0])[0])
        return {**self.compute_metrics(x, y, out.predictions, sample_weight),
                **self._layer_metrics.results()}

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; raises `NonFiniteError` for a NaN/Inf step under "raise"."""
        try:
            history = super().fit(*args, **kwargs)
        except tf.errors.InvalidArgumentError:
            if self._engine is not None:
                self._engine.raise_if_nonfinite()
            raise
        if self._engine is not None:
            self._engine.raise_if_nonfinite()
        return history

    def reset_metrics(self):
        super().reset_metrics()
        self._layer_metrics.reset()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config.update(keras.saving.serialize_keras_object(
                {"sg_optimizer": self.sg_optimizer, "seed": self._dni_seed,
                 **self._dni_options.as_dict()}))
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))


@keras.saving.register_keras_serializable(package="sg_keras")
class FunctionalDNIModel(DNIModel, Functional):
    """The functional `DNIModel`: what `DNIModel(inputs, outputs)` returns.

    Subclass it (not `DNIModel`) for a subclass whose `__init__` builds a
    graph and calls `super().__init__(inputs, outputs)`.

    >>> inputs = keras.Input((8,))
    >>> outputs = keras.layers.Dense(2)(DecoupledLayer(keras.layers.Dense(4))(inputs))
    >>> type(DNIModel(inputs, outputs)).__name__
    'FunctionalDNIModel'
    """
