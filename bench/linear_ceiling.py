"""How well can a synthesizer predict the true gradient from what it sees? DNI vs cDNI.

Takes the 3-layer MNIST FCN trained --epochs (30) with DNI and with cDNI,
seed 0 (bench/accuracy.py's runs when they hold that budget, else trained
here), and looks at the topmost decoupled layer (whose synthesizer regresses
on the true gradient) on --examples (20,000) training examples, split in
halves: fit rows and held-out rows. For the features `[h, 1]` (what a DNI
synthesizer sees) and `[h, 1, one-hot label]` (cDNI) it fits the
least-squares linear predictor of the true per-example gradient `∂L_sum/∂h`
on the fit rows, and reports

* the ceiling: that fit's cosine similarity with the true gradient on the
  fit rows. The least-squares fit is the projection of the true gradient
  onto what linear maps of the features can produce, so no linear
  predictor in those features reaches a higher cosine (over the flattened
  matrix) on those rows;
* that fit's cosine on the held-out rows;
* the trained synthesizer's cosine on the fit rows (bounded by the ceiling of
  its features) and on the held-out rows;
* the paper's DNI synthesizer, an MLP of two hidden layers of 1024 units
  (Dense → BatchNorm → ReLU, `DenseSynthesizer(2, 1024)`), fitted offline
  by Adam on the fit rows' squared error for --mlp_epochs and evaluated on
  both row sets: the nonlinear counterpart of the linear ceiling, where the
  synthesizer is given the true gradient as its target (no bootstrapping)
  and all the time it needs.

A ceiling near 0 means the gradient is not linearly predictable from the
activation alone; a held-out cosine near 0 for the MLP means no synthesizer
of the paper's size generalises that prediction to new examples.

    python bench/linear_ceiling.py [--epochs 30]
"""

import argparse
import json

import numpy as np

from benchlib import paths, tables, training
from sg_keras.metrics import cosine_similarity


def mlp_fit(h, extra, true, fit, epochs, seed=0):
    """The paper's 2×1024 synthesizer on `h` with the `extra` features as its context,
    fitted to `true[fit]`; its predictions on every row. Targets are scaled to unit mean
    square for Adam's sake."""
    import keras

    from sg_keras.synthesizers import DenseSynthesizer

    keras.utils.set_random_seed(seed)
    scale = float(np.sqrt(np.mean(true[fit] ** 2)))
    inputs = [keras.Input((h.shape[1],)), keras.Input((extra.shape[1],))]
    model = keras.Model(inputs, DenseSynthesizer(2, 1024)(inputs[0], context=inputs[1]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit([h[fit], extra[fit]], true[fit] / scale, batch_size=256, epochs=epochs, verbose=0)
    return model.predict([h, extra], batch_size=1024, verbose=0) * scale


def measure(model_path, x, y, context, mlp_epochs):
    """Cosines with the true gradient at the top decoupled layer, by column name."""
    import keras
    import tensorflow as tf

    import sg_keras  # noqa: F401  (registers the layers for loading)

    model = keras.models.load_model(model_path)
    flatten, *blocks, head = model.layers
    h = flatten(x)
    for block in blocks[:-1]:
        h = block.layer(h, training=False)
    with tf.GradientTape() as tape:
        top = blocks[-1].layer(h, training=False)
        tape.watch(top)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
            y, head(top), from_logits=True))
    true = tape.gradient(loss, top).numpy()
    top = top.numpy()
    labels = np.eye(10, dtype="float32")[y]
    fit, held_out = slice(0, len(y) // 2), slice(len(y) // 2, None)

    def cosine(prediction, rows):
        return float(cosine_similarity(prediction[rows], true[rows]))

    cosines = {}
    for name, features in (("[h,1]", np.hstack([top, np.ones((len(y), 1))])),
                           ("[h,1,label]", np.hstack([top, np.ones((len(y), 1)), labels]))):
        prediction = features @ np.linalg.lstsq(features[fit], true[fit], rcond=None)[0]
        cosines[f"ceiling {name}, fit rows"] = cosine(prediction, fit)
        cosines[f"LS fit {name}, held-out"] = cosine(prediction, held_out)
        mlp = mlp_fit(top, features[:, top.shape[1]:], true, fit, mlp_epochs)
        cosines[f"2x1024 MLP {name}, fit rows"] = cosine(mlp, fit)
        cosines[f"2x1024 MLP {name}, held-out"] = cosine(mlp, held_out)
    synthetic = blocks[-1].synthetic_gradient(top, labels if context else None).numpy()
    cosines["synthesizer, fit rows"] = cosine(synthetic, fit)
    cosines["synthesizer, held-out"] = cosine(synthetic, held_out)
    return cosines


def trained_model(mode, epochs):
    """`(run name, model path)` of the 3-layer FCN of `mode` trained `epochs` epochs, seed 0.

    bench/accuracy.py's seed-0 run when it finished with these settings (its
    cosine measurements and evaluations leave the training unchanged), else a
    run trained here.
    """
    settings = {"mode": mode, "num_layers": 3, "seed": 0, **training.schedule(epochs)}
    name = f"accuracy/fcn3_{mode}_seed0"
    model = paths.RUNS / name / "model.keras"
    if model.is_file():
        flags = json.loads((model.parent / "flags.json").read_text(encoding="utf-8"))
        if all(flags.get(key) == value for key, value in settings.items()):
            return name, model
    name = f"linear_ceiling/fcn3_{mode}"
    training.train(name, eval_every=10**6, measure_every=0, **settings)
    return name, paths.RUNS / name / "model.keras"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--mlp_epochs", type=int, default=30,
                        help="epochs of the offline 2x1024 MLP fit")
    args = parser.parse_args()
    train, _ = paths.load_mnist()
    x = train.x[:args.examples].astype("float32") / 255.0
    y = train.y[:args.examples]
    rows = []
    for mode in ("dni", "cdni"):
        run, model = trained_model(mode, args.epochs)
        rows.append({"mode": mode, **measure(model, x, y, mode == "cdni", args.mlp_epochs),
                     "run": run})
    tables.write_results(
        "linear_ceiling", "Cosine with the true gradient at the top decoupled layer",
        list(rows[0]), rows, notes=[
            f"3-layer FCN trained {args.epochs:g} epochs (as bench/accuracy.py), seed 0, from "
            "bench/results/runs/RUN; inference-mode activations h of the top decoupled layer; "
            f"fit rows: the first {args.examples // 2} training examples, held-out rows: the "
            f"next {args.examples - args.examples // 2}.",
            "ceiling F, fit rows: cosine of the least-squares fit from the features F on the "
            "rows it was fitted on, the highest cosine (over the flattened matrix) any linear "
            "predictor in F reaches on those rows; LS fit F, held-out: the same fit's cosine on "
            "the held-out rows.",
            "The DNI synthesizer is linear in [h,1], the cDNI one in [h,1,label]: its cosine on "
            "the fit rows is at most that ceiling.",
            f"2x1024 MLP F: the paper's DNI synthesizer (two hidden layers of 1024, BatchNorm, "
            f"ReLU) fitted offline to the true gradient on the fit rows ({args.mlp_epochs} epochs "
            "of Adam 1e-3, batch 256), its cosine on the fit and the held-out rows."])


if __name__ == "__main__":
    main()
