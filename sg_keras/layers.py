"""`DecoupledLayer`: a Keras wrapper that trains its layer with synthetic gradients."""

import keras

from sg_keras import interception
from sg_keras.synthesizers import default_synthesizer
from sg_keras.validation import int_at_least


def _is_float(value):
    dtype = getattr(value, "dtype", None)
    return dtype is not None and keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype))


def _symbolic(value):
    """A symbolic stand-in (batch dimension unknown) for a tensor or array argument."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        return value
    shape = tuple(value.shape)
    return keras.KerasTensor((None, *shape[1:]) if shape else shape,
                             dtype=keras.backend.standardize_dtype(value.dtype))


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

    Any layer can be wrapped: `call(*args, **kwargs)` passes every argument
    (several tensors or a list of them, keyword tensors such as
    `MultiHeadAttention`'s `value` and `attention_mask`, `mask`, `training`)
    to the wrapped layer; what is decoupled is its output. The wrapped layer
    builds on the first call, with its own argument names, and its output
    shapes (and masks) are the wrapper's.

    Several outputs (a tuple, list or dict, e.g. an RNN with
    `return_state=True`): every float tensor in it (in `keras.tree.flatten`
    order) is decoupled by its own synthesizer and reported under its own
    key: `NAME` for the first, `NAME_1`, `NAME_2`, ... for the next ones
    (`sg_loss/NAME_1`). Other outputs (integer tensors) pass through.

    Precision: each synthesizer computes in the dtype of its activation (the
    wrapped layer's compute dtype, e.g. bfloat16 under `mixed_bfloat16`; a
    default synthesizer takes the wrapped layer's dtype policy, so its
    variables and optimizer state stay float32); the regression target `N·δ`,
    the synthesizer loss and its gradient are computed in float32, and the
    gradient sent down is cast to the activation's dtype. `mixed_float16` is
    refused by the trainers (its loss scaling would scale `δ`).

    Args:
        layer: the Keras layer (or block, e.g. a `keras.Sequential` or a
            `Layer` subclass) to wrap. Its float outputs need a shape known
            apart from the batch dimension (a sequence length may be None
            for per-position synthesizers).
        synthesizer: a Keras layer `M(h, context=None) -> ĝ` with `h`'s shape,
            or for a layer with several float outputs a list with one per
            output (None entries take the default). Default (see
            `synthesizers.default_synthesizer`): a zero-initialised linear
            `DenseSynthesizer` for rank-2 outputs, the same per position for
            rank 3 and rank 5 and above, a `ConvSynthesizer` for rank 4.
        context_dim: size of the context vector for cDNI (e.g. 10 for one-hot
            MNIST labels); None for plain DNI. The context is given per example
            `(batch, context_dim)` or, for a sequence, per position
            `(batch, T, context_dim)`.
        **kwargs: base layer arguments (`name`, ...); the dtype policy
            defaults to the wrapped layer's.

    Example:

    >>> block = keras.Sequential([keras.layers.Dense(32), keras.layers.ReLU()])
    >>> model = keras.Sequential([keras.Input((8,)), DecoupledLayer(block),
    ...                           keras.layers.Dense(2)])
    >>> model(np.zeros((1, 8))).shape     # inference: just the block
    TensorShape([1, 2])
    >>> a, b = keras.Input((4,)), keras.Input((4,))
    >>> DecoupledLayer(keras.layers.Add())([a, b]).shape
    (None, 4)
    """

    def __init__(self, layer, synthesizer=None, context_dim=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"`layer` must be a Keras layer, got {layer!r}.")
        several = isinstance(synthesizer, (list, tuple))
        given = list(synthesizer) if several else [synthesizer]
        if not given or any(s is not None and not isinstance(s, keras.layers.Layer)
                            for s in given):
            raise ValueError(
                f"`synthesizer` must be a Keras layer, a list of them (one per float output, "
                f"None for the default) or None for the default, got {synthesizer!r}.")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.supports_masking = layer.supports_masking
        self.context_dim = (None if context_dim is None
                            else int_at_least(context_dim, 1, "context_dim"))
        if len(given) > 1:
            self.output_synthesizers = given
        self.synthesizer = given[0] if len(given) == 1 else None

    @property
    def synthesizers(self):
        """Every synthesizer of the layer, one per decoupled output (in `keras.tree.flatten` order)."""
        if hasattr(self, "output_synthesizers"):
            return [s for s in self.output_synthesizers if s is not None]
        return [] if self.synthesizer is None else [self.synthesizer]

    def __call__(self, *args, **kwargs):
        if not self.built:
            # Keras would build from the first argument's shape alone; the wrapped layer may
            # take several (by name), so it is built here by a symbolic call on all of them.
            with keras.name_scope(self.name, caller=self):
                self._build_from_inputs(args, kwargs)
        return super().__call__(*args, **kwargs)

    def build(self, input_shape):
        """Builds the wrapped layer and the synthesizers for one input of shape `input_shape`.

        `input_shape` may be a structure of shapes (e.g. a list for `Add`). A
        layer called with several arguments builds on its first call instead.
        """
        self._build_from_inputs((keras.tree.map_shape_structure(keras.KerasTensor, input_shape),),
                                {})

    def _build_from_inputs(self, args, kwargs):
        args, kwargs = keras.tree.map_structure(_symbolic, (args, kwargs))
        try:
            spec = self.layer(*args, **kwargs)
        except Exception as error:  # the wrapped layer's own error, re-raised with context
            shapes = keras.tree.map_structure(lambda x: getattr(x, "shape", x), (args, kwargs))
            raise ValueError(
                f"`layer` {self.layer.name!r}: its output cannot be inferred for the inputs "
                f"{shapes} ({error}).") from error
        self._make_synthesizers(spec)
        self.built = True

    def _activation_shape(self, spec):
        shape = getattr(spec, "shape", None)
        if shape is None or len(shape) < 2 or shape[-1] is None:
            raise ValueError(
                f"`layer` {self.layer.name!r}: each float output must have a batch axis and a "
                f"known number of features (its last axis), got "
                f"{shape if shape is not None else spec}. The synthesizer needs that shape.")
        return tuple(shape)

    def _make_synthesizers(self, spec):
        """Makes (defaults) and builds one synthesizer per float output in `spec`."""
        shapes = [self._activation_shape(leaf) for leaf in keras.tree.flatten(spec)
                  if _is_float(leaf)]
        if not shapes:
            raise ValueError(f"`layer` {self.layer.name!r} has no float output to decouple, "
                             f"got {spec}.")
        several = hasattr(self, "output_synthesizers")
        if len(shapes) == 1 and several:
            raise ValueError(f"`synthesizer`: a list of {len(self.output_synthesizers)} given, "
                             f"but {self.layer.name!r} has one float output; give one layer.")
        if len(shapes) > 1 and not several:
            if self.synthesizer is not None:
                raise ValueError(
                    f"`synthesizer`: {self.layer.name!r} has {len(shapes)} float outputs; give "
                    "a list with one synthesizer per output (None for the default).")
            self.output_synthesizers = [None] * len(shapes)
        if len(shapes) == 1:
            if self.synthesizer is None:
                self.synthesizer = self._default_synthesizer(shapes[0], f"{self.name}_synthesizer")
            self._build_synthesizer(self.synthesizer, shapes[0])
            return
        if len(self.output_synthesizers) != len(shapes):
            raise ValueError(f"`synthesizer`: {len(self.output_synthesizers)} given, but "
                             f"{self.layer.name!r} has {len(shapes)} float outputs.")
        for index, shape in enumerate(shapes):
            if self.output_synthesizers[index] is None:
                self.output_synthesizers[index] = self._default_synthesizer(
                    shape, f"{self.name}_synthesizer" + (f"_{index}" if index else ""))
            self._build_synthesizer(self.output_synthesizers[index], shape)

    def _default_synthesizer(self, h_shape, name):
        return default_synthesizer(len(h_shape), name=name, dtype=self.layer.dtype_policy)

    def _build_synthesizer(self, synthesizer, h_shape):
        context = {}
        if self.context_dim is not None:
            context["context"] = keras.KerasTensor((h_shape[0], self.context_dim))
        output = synthesizer(keras.KerasTensor(h_shape), **context)
        if tuple(getattr(output, "shape", ()))[1:] != h_shape[1:]:
            raise ValueError(
                f"`synthesizer` {synthesizer.name!r} returns shape "
                f"{getattr(output, 'shape', output)} but the activation it must predict the "
                f"gradient of has shape {h_shape}.")

    def _context_kwargs(self, context):
        """Validates a context and returns the synthesizers' keyword arguments."""
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
        if len(context.shape) < 2 or (size is not None and size != self.context_dim):
            raise ValueError(
                f"`context` for {self.name!r} must have shape (batch, {self.context_dim}) or, "
                f"per position, (batch, ..., {self.context_dim}), got {tuple(context.shape)}.")
        return {"context": context}

    def call(self, *args, training=None, **kwargs):
        outputs = self.layer(*args, training=training, **kwargs)
        scope = interception.current_scope()
        if not training or (scope is not None and not scope.enabled):
            return outputs
        context = self._context_kwargs(scope.context if scope is not None else None)
        synthesizers = iter(enumerate(self.synthesizers))
        leaves = []
        for h in keras.tree.flatten(outputs):
            if not _is_float(h):
                leaves.append(h)
                continue
            leaf, synthesizer = next(synthesizers)

            def synthesize(activation, synthesizer=synthesizer):
                return synthesizer(activation, training=True, **context)

            if scope is None:
                leaves.append(interception.intercept(self, h, synthesize, leaf=leaf)[0])
            else:
                leaves.append(scope.intercept(self, h, synthesize, leaf=leaf))
        return keras.tree.pack_sequence_as(outputs, leaves)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        # Keras passes the first call argument, here the tuple of positional arguments.
        if isinstance(inputs, tuple) and len(inputs) == 1:
            inputs = inputs[0]
            previous_mask = previous_mask[0] if isinstance(previous_mask, tuple) else previous_mask
        return self.layer.compute_mask(inputs, previous_mask)

    def synthetic_gradient(self, h, context=None, training=False):
        """Returns `ĝ = M(h[, context])` for an activation `h`.

        The prediction is per example (the gradient of the summed loss); in
        training it is divided by the batch size where it is applied. For a
        layer with several outputs `h` is their structure, and so is `ĝ`
        (None for an output that is not decoupled).

        Example:

        >>> layer = DecoupledLayer(keras.layers.Dense(4), context_dim=3)
        >>> layer.build((None, 2))
        >>> layer.synthetic_gradient(np.ones((5, 4)), context=np.eye(3)[[0] * 5]).shape
        TensorShape([5, 4])
        """
        kwargs = self._context_kwargs(context)
        if not hasattr(self, "output_synthesizers"):
            return self.synthesizer(h, training=training, **kwargs)
        synthesizers = iter(self.synthesizers)
        return keras.tree.pack_sequence_as(h, [
            next(synthesizers)(leaf, training=training, **kwargs) if _is_float(leaf) else None
            for leaf in keras.tree.flatten(h)])

    def get_config(self):
        config = super().get_config()
        def serialize(synthesizer):
            return (None if synthesizer is None
                    else keras.saving.serialize_keras_object(synthesizer))

        config["synthesizer"] = ([serialize(s) for s in self.output_synthesizers]
                                 if hasattr(self, "output_synthesizers")
                                 else serialize(self.synthesizer))
        config["context_dim"] = self.context_dim
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        given = config.get("synthesizer")
        if given is not None:
            def deserialize(item):
                return (None if item is None else
                        keras.saving.deserialize_keras_object(item, custom_objects=custom_objects))

            config["synthesizer"] = ([deserialize(item) for item in given]
                                     if isinstance(given, list) else deserialize(given))
        return super().from_config(config, custom_objects=custom_objects)
