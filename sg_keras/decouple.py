"""`decouple(model, layers)`: a built Keras model, decoupled at the layers you name.

`keras.models.clone_model(model, clone_function=f)` rebuilds a functional
graph calling `f(layer)` for each layer; returning `DecoupledLayer(layer)`
around the *same* layer object shares its weights instead of copying them.
`decouple` is that recipe as one call.
"""

import keras

from sg_keras.dni_model import DNIModel
from sg_keras.keras_compat import Functional, flatten_layers
from sg_keras.layers import DecoupledLayer

_GRAPHS = (keras.Sequential, Functional)


def _inner_layers(model):
    """Every layer inside `model` (nested models' layers included), inputs left out."""
    return [layer for layer in flatten_layers(model)[1:]
            if not isinstance(layer, keras.layers.InputLayer)]


def _chooser(model, layers):
    """`layers` (names or a predicate) as a predicate on layer objects."""
    if callable(layers) and not isinstance(layers, (str, list, tuple, set)):
        return layers
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise ValueError(f"`layers` must be a list of layer names or a predicate "
                         f"`layer -> bool`, got {layers!r}.")
    known = [layer.name for layer in _inner_layers(model)]
    unknown = sorted(set(layers) - set(known))
    if unknown:
        raise ValueError(f"`layers`: no layer named {unknown} in model {model.name!r}; its "
                         f"layers include {known[:8]}.")
    names = set(layers)
    return lambda layer: layer.name in names


def _synthesizer_maker(synthesizer):
    """`synthesizer` (None, a template layer or `layer -> synthesizer`) as `layer -> synthesizer`."""
    if synthesizer is None:
        return lambda layer: None
    if isinstance(synthesizer, keras.layers.Layer):
        config = synthesizer.get_config()
        return lambda layer: type(synthesizer).from_config(
            {**config, "name": f"{layer.name}_synthesizer"})
    if callable(synthesizer):
        return synthesizer
    raise ValueError(f"`synthesizer` must be None, a Keras layer (each decoupled layer gets a "
                     f"copy of it) or a function `layer -> synthesizer`, got {synthesizer!r}.")


def decouple(model, layers, *, context_dim=None, synthesizer=None):
    """A `DNIModel` on `model`'s graph whose chosen layers are `DecoupledLayer`s.

    The chosen layers are the same objects in both models (weights shared,
    nothing copied), each wrapped in a `DecoupledLayer` of the same name (so
    `sg_loss/NAME` in the logs names the layer you chose). Layers inside a
    nested Sequential or functional model are reached too: that nested
    model is rebuilt the same way, around its same layers.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model` (e.g. a
            `keras.applications` model).
        layers: a list of layer names, or a predicate `layer -> bool` asked
            of every layer (nested ones included; a chosen nested model is
            wrapped whole).
        context_dim: the cDNI context size (e.g. the number of classes) of
            every decoupled layer; None for DNI.
        synthesizer: None (the default synthesizer of each output's rank), a
            Keras layer (each decoupled layer gets a copy made from its
            config), or a function `layer -> synthesizer` (None: the default).

    Returns:
        A `FunctionalDNIModel`; compile and fit it, or train it with `DNITrainer`.

    Raises:
        ValueError: `model` is not a built Sequential or functional model, or
            a name in `layers` is not one of its layers (the message lists
            some that are).

    Example:

    >>> inputs = keras.Input((8,))
    >>> hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    >>> dni = sg_keras.decouple(model, ["hidden"])
    >>> dni.get_layer("hidden").layer is model.get_layer("hidden")
    True
    >>> dni.compile(optimizer="adam",
    ...             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = dni.fit(np.ones((8, 8)), np.zeros(8, "int32"), epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'sg_loss/hidden']
    """
    if not isinstance(model, _GRAPHS) or not model.built:
        raise ValueError(f"`model` must be a built Sequential or functional keras.Model, got "
                         f"{model!r}; for a subclassed model, wrap its layers in "
                         "sg_keras.DecoupledLayer and subclass sg_keras.DNIModel.")
    chosen = _chooser(model, layers)
    synthesizer_of = _synthesizer_maker(synthesizer)

    def clone(layer):
        if chosen(layer):
            return DecoupledLayer(layer, synthesizer=synthesizer_of(layer),
                                  context_dim=context_dim, name=layer.name)
        if isinstance(layer, _GRAPHS) and any(chosen(inner) for inner in _inner_layers(layer)):
            return keras.models.clone_model(layer, clone_function=clone)
        return layer

    return DNIModel.from_model(keras.models.clone_model(model, clone_function=clone))
