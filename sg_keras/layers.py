"""`DecoupledLayer`: a Keras wrapper that trains its layer with synthetic gradients."""

import keras

from sg_keras import interception
from sg_keras.synthesizers import default_synthesizer
from sg_keras.validation import int_at_least


@keras.saving.register_keras_serializable(package="sg_keras")
class DecoupledLayer(keras.layers.Wrapper):
    """Decouples a layer from the layers above it with a synthetic gradient.

    At inference the wrapper is exactly the wrapped layer. In training
    (`training=True`) the wrapped layer's output `h` is returned through a
    gradient interception (see `sg_keras.interception`): the layer and the
    layers below receive the synthetic gradient `ĝ = M(h[, c])` instead of the
    true one, and the synthesizer `M` learns by regression on the gradient that
    actually arrives at `h` from above. One `tape.gradient` over the whole model
    then yields the DNI updates of every module and every synthesizer.

    Args:
        layer: the Keras layer (or block, e.g. a `keras.Sequential`) to wrap.
            Its output must be a single tensor with a fully known shape apart
            from the batch dimension.
        synthesizer: a Keras layer `M(h, context=None) -> ĝ` with `h`'s shape.
            Default: a zero-initialised linear `DenseSynthesizer` for rank-2
            outputs, a `ConvSynthesizer` for rank-4 outputs.
        context_dim: size of the context vector for cDNI (e.g. 10 for one-hot
            MNIST labels); None for plain DNI.
        **kwargs: base layer arguments (`name`, ...).

    Example:

    >>> block = keras.Sequential([keras.layers.Dense(32), keras.layers.ReLU()])
    >>> model = keras.Sequential([keras.Input((8,)), DecoupledLayer(block),
    ...                           keras.layers.Dense(2)])
    >>> model(np.zeros((1, 8))).shape     # inference: just the block
    TensorShape([1, 2])
    """

    def __init__(self, layer, synthesizer=None, context_dim=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"`layer` must be a Keras layer, got {layer!r}.")
        if synthesizer is not None and not isinstance(synthesizer, keras.layers.Layer):
            raise ValueError(
                f"`synthesizer` must be a Keras layer (or None for the default), "
                f"got {synthesizer!r}.")
        super().__init__(layer, **kwargs)
        self.context_dim = (None if context_dim is None
                            else int_at_least(context_dim, 1, "context_dim"))
        self.synthesizer = synthesizer

    def build(self, input_shape):
        super().build(input_shape)
        h_shape = self._activation_shape(input_shape)
        if self.synthesizer is None:
            self.synthesizer = default_synthesizer(len(h_shape), name=f"{self.name}_synthesizer")
        self._build_synthesizer(h_shape)
        self.built = True

    def _activation_shape(self, input_shape):
        try:
            spec = self.layer.compute_output_spec(keras.KerasTensor(input_shape))
        except Exception as error:  # the wrapped layer's own error, re-raised with context
            raise ValueError(
                f"`layer` {self.layer.name!r}: its output shape cannot be inferred for "
                f"input shape {tuple(input_shape)} ({error}).") from error
        shape = getattr(spec, "shape", None)
        if shape is None or len(shape) < 2 or any(d is None for d in shape[1:]):
            raise ValueError(
                f"`layer` {self.layer.name!r}: its output must be one tensor whose shape is known "
                f"apart from the batch dimension, got {shape if shape is not None else spec}. "
                "The synthesizer needs that shape.")
        return tuple(shape)

    def _build_synthesizer(self, h_shape):
        context = {}
        if self.context_dim is not None:
            context["context"] = keras.KerasTensor((h_shape[0], self.context_dim))
        output = self.synthesizer(keras.KerasTensor(h_shape), **context)
        if tuple(getattr(output, "shape", ()))[1:] != h_shape[1:]:
            raise ValueError(
                f"`synthesizer` {self.synthesizer.name!r} returns shape "
                f"{getattr(output, 'shape', output)} but the activation it must predict the "
                f"gradient of has shape {h_shape}.")

    def _check_context(self, context):
        """Validates a context and returns the synthesizer's keyword arguments."""
        if self.context_dim is None:
            if context is not None:
                raise ValueError(
                    f"`context` given to {self.name!r}, which was built without `context_dim`.")
            return {}
        if context is None:
            raise ValueError(
                f"{self.name!r} is a cDNI layer (context_dim={self.context_dim}) and needs a "
                "`context` in training: train it with DNITrainer(mode='cdni') or DNIModel, or "
                "run the forward pass inside sg_keras.GradientInterception(context=...).")
        size = context.shape[-1]
        if len(context.shape) != 2 or (size is not None and size != self.context_dim):
            raise ValueError(
                f"`context` for {self.name!r} must have shape (batch, {self.context_dim}), "
                f"got {tuple(context.shape)}.")
        return {"context": context}

    def call(self, inputs, training=None):
        h = self.layer(inputs)
        scope = interception.current_scope()
        if not training or (scope is not None and not scope.enabled):
            return h
        kwargs = self._check_context(scope.context if scope is not None else None)

        def synthesize(activation):
            return self.synthesizer(activation, training=True, **kwargs)

        if scope is None:
            return interception.intercept(self, h, synthesize)[0]
        return scope.intercept(self, h, synthesize)

    def synthetic_gradient(self, h, context=None, training=False):
        """Returns `ĝ = M(h[, context])` for an activation `h`.

        The prediction is per example (the gradient of the summed loss); in
        training it is divided by the batch size where it is applied.

        Example:

        >>> layer = DecoupledLayer(keras.layers.Dense(4), context_dim=3)
        >>> layer.build((None, 2))
        >>> layer.synthetic_gradient(np.ones((5, 4)), context=np.eye(3)[[0] * 5]).shape
        TensorShape([5, 4])
        """
        return self.synthesizer(h, training=training, **self._check_context(context))

    def get_config(self):
        config = super().get_config()
        config["synthesizer"] = (None if self.synthesizer is None
                                 else keras.saving.serialize_keras_object(self.synthesizer))
        config["context_dim"] = self.context_dim
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if config.get("synthesizer") is not None:
            config["synthesizer"] = keras.saving.deserialize_keras_object(
                config["synthesizer"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
