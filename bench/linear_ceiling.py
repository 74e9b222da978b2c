"""How well can any linear synthesizer predict the true gradient? DNI vs cDNI.

Trains the 3-layer MNIST FCN with DNI and with cDNI, then, for the topmost
decoupled layer (whose synthesizer regresses on the true gradient), fits the
best linear predictor of the true per-example gradient `∂L_sum/∂h` by least
squares on 10,000 training examples — from `[h, 1]` (what a DNI synthesizer
sees) and from `[h, 1, one-hot label]` (cDNI) — and reports its cosine
similarity with the true gradient on 10,000 other examples, next to the
trained synthesizer's own cosine. A ceiling near 0 means the gradient is not
linearly predictable from the activation alone.

    python bench/linear_ceiling.py [--epochs 30]
"""

import argparse

import numpy as np

import common


def cosine(a, b):
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure(model_path, x, y, context):
    """(least-squares ceiling from h, from h and label, trained synthesizer) cosines."""
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
    ceilings = []
    for features in (np.hstack([top, np.ones((len(y), 1))]),
                     np.hstack([top, np.ones((len(y), 1)), labels])):
        weights = np.linalg.lstsq(features[fit], true[fit], rcond=None)[0]
        ceilings.append(cosine(features[held_out] @ weights, true[held_out]))
    synthetic = blocks[-1].synthetic_gradient(
        top[held_out], labels[held_out] if context else None).numpy()
    return ceilings + [cosine(synthetic, true[held_out])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--examples", type=int, default=20000)
    args = parser.parse_args()
    train, _ = common.load_mnist()
    x = train.x[:args.examples].astype("float32") / 255.0
    y = train.y[:args.examples]
    rows = []
    for mode in ("dni", "cdni"):
        name = f"linear_ceiling/fcn3_{mode}"
        common.train(name, mode=mode, seed=0, eval_every=10**6, measure_every=0,
                     **common.schedule(args.epochs))
        from_h, from_h_and_label, trained = measure(
            common.RUNS / name / "model.keras", x, y, context=mode == "cdni")
        rows.append({"mode": mode, "best linear from h": from_h,
                     "best linear from h and label": from_h_and_label,
                     "trained synthesizer": trained})
    common.write_results(
        "linear_ceiling", "Cosine with the true gradient at the top decoupled layer",
        ["mode", "best linear from h", "best linear from h and label", "trained synthesizer"],
        rows, notes=[
            f"3-layer FCN trained {args.epochs:g} epochs (as bench/accuracy.py), seed 0; "
            f"least squares fitted on {args.examples // 2} training examples, cosine on "
            f"{args.examples - args.examples // 2} others (inference-mode activations).",
            "The DNI synthesizer sees only h: its ceiling is the first column."])


if __name__ == "__main__":
    main()
