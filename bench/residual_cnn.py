"""A residual CNN on MNIST decoupled at its residual sums: backprop vs DNI vs cDNI test error.

The network: a stem (Conv2D 3×3, stride 2 → BatchNorm → ReLU, 28×28 → 14×14),
`--units` residual units (Conv2D 3×3 → BN → ReLU → Conv2D 3×3 → BN, plus the
identity, summed by an `Add`, then ReLU), global average pooling and
Dense(10). Every `Add` is wrapped in a `DecoupledLayer`: the residual sum
`h = x + F(x)` is what the synthesizer predicts the gradient of, so the unit
and the stream below it learn from `ĝ` and the ReLU after the sum belongs to
the module above.

The synthesizer (`--synth`): "linear" (default) is a zero-initialised 3×3
`ConvSynthesizer` with no hidden layer (forward: half the multiply-adds of
the unit's two convolutions with 16 filters, 0.8 times with cDNI's 10 context
channels); "default" is the library's default for rank-4 activations (two
hidden 5×5 conv layers of 128 filters, the paper's CIFAR-10 setting), about
120 times the unit's forward multiply-adds here.

Every (mode, seed) trains from the same initial weights of its seed on the
same batches (Adam, batch 256, `--steps`, default one epoch), then its test
error is measured on the 10,000 test images. Finished runs are appended to
`bench/results/residual_cnn_runs.jsonl` and skipped on a rerun. Step times:
after the runs of a seed, the three models keep training for `--time_rounds`
interleaved rounds of `--time_block` steps each (`benchlib.timing.step_times`);
the ratio to backprop is the median of the per-round ratios.

    python bench/residual_cnn.py --seeds 0 1 2
    python bench/residual_cnn.py --quick
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import paths, run_records, tables, timing  # noqa: E402

MODES = ("backprop", "dni", "cdni")
CLASSES = 10
BN_MOMENTUM = 0.9   # Keras' 0.99 leaves a tenth of the initial statistics after one epoch


def load(path):
    import numpy as np

    with np.load(path) as archive:
        def images(key):
            return (archive[key].astype("float32") / 255.0)[..., None]

        return (images("x_train"), archive["y_train"].astype("int32"),
                images("x_test"), archive["y_test"].astype("int32"))


def synthesizer(kind):
    from sg_keras.synthesizers import ConvSynthesizer

    return None if kind == "default" else ConvSynthesizer(hidden_layers=0, kernel_size=3)


def build_model(mode, args):
    """The residual CNN as a DNIModel, each residual sum a DecoupledLayer."""
    import keras

    import sg_keras

    layers = keras.layers
    context_dim = CLASSES if mode == "cdni" else None
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(args.filters, 3, strides=2, padding="same", name="stem")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x))
    for unit in range(args.units):
        y = layers.Conv2D(args.filters, 3, padding="same", name=f"unit{unit}_conv1")(x)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"unit{unit}_bn1")(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(args.filters, 3, padding="same", name=f"unit{unit}_conv2")(y)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"unit{unit}_bn2")(y)
        add = sg_keras.DecoupledLayer(layers.Add(name=f"unit{unit}_sum"),
                                      synthesizer=synthesizer(args.synth),
                                      context_dim=context_dim, name=f"add{unit}")
        x = layers.ReLU()(add([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    model = sg_keras.DNIModel(inputs, layers.Dense(CLASSES, name="head")(x))
    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  sg_optimizer=keras.optimizers.Adam(args.sg_lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], mode=mode)
    return model


def run_key(mode, seed, args):
    return json.dumps({"mode": mode, "seed": seed, "steps": args.steps, "units": args.units,
                       "filters": args.filters, "synth": args.synth, "lr": args.lr,
                       "sg_lr": args.sg_lr}, sort_keys=True)


def train_seed(modes, seed, data, args):
    """Trains `modes` for one seed; returns their records, with step times per timing round."""
    import keras
    import numpy as np

    x_train, y_train, x_test, y_test = data
    order = np.random.default_rng(seed).permutation(len(x_train))
    per_epoch = len(x_train) // args.batch
    batches = []
    for step in range(args.steps):
        if step and step % per_epoch == 0:
            order = np.random.default_rng([seed, step // per_epoch]).permutation(len(x_train))
        index = order[(step % per_epoch) * args.batch:(step % per_epoch + 1) * args.batch]
        batches.append((x_train[index], y_train[index]))
    models, records = {}, {}
    for mode in modes:
        keras.utils.set_random_seed(seed)   # same initial weights in every mode
        models[mode] = build_model(mode, args)
        sg_losses = {}
        for x, y in batches:
            logs = models[mode].train_on_batch(x, y, return_dict=True)
            for key, value in logs.items():
                if key.startswith("sg_loss/"):
                    sg_losses.setdefault(key.split("/", 1)[1], []).append(float(value))
        result = models[mode].evaluate(x_test, y_test, batch_size=1000, verbose=0,
                                       return_dict=True)
        tail = max(1, args.steps // 10)
        records[mode] = {"mode": mode, "seed": seed, "steps": args.steps,
                         "test_error_pct": 100 * (1 - result["accuracy"]),
                         "sg_loss_tail": {k: statistics.mean(v[-tail:])
                                          for k, v in sg_losses.items()}}
        print(json.dumps(records[mode]), flush=True)
    steppers = {mode: models[mode].train_on_batch for mode in modes}
    times = timing.step_times(steppers, batches, warmup=2, rounds=args.time_rounds,
                              block=args.time_block)
    for mode in modes:
        records[mode]["step_ms_rounds"] = [1e3 * t for t in times[mode]]
        if "backprop" in times:
            records[mode]["time_ratio_rounds"] = [
                t / b for t, b in zip(times[mode], times["backprop"])]
    return [records[mode] for mode in modes]


def table_rows(records, args):
    rows = []
    base = {r["seed"]: r["test_error_pct"] for r in records if r["mode"] == "backprop"}
    for mode in MODES:
        runs = sorted((r for r in records if r["mode"] == mode), key=lambda r: r["seed"])
        if not runs:
            continue
        errors = [r["test_error_pct"] for r in runs]
        gaps = [r["test_error_pct"] - base[r["seed"]] for r in runs if r["seed"] in base]
        ratios = [x for r in runs for x in r.get("time_ratio_rounds", [])]
        sg = {k: statistics.mean(r["sg_loss_tail"][k] for r in runs)
              for k in runs[0]["sg_loss_tail"]}
        rows.append({
            "mode": mode, "seeds": " ".join(str(r["seed"]) for r in runs),
            "test error % per seed": " / ".join(f"{e:.2f}" for e in errors),
            "mean test error %": statistics.mean(errors),
            "Δ vs backprop (points)": statistics.mean(gaps) if gaps and mode != "backprop"
            else None,
            "step ms": statistics.median(x for r in runs for x in r["step_ms_rounds"]),
            "time / backprop": statistics.median(ratios) if ratios else None,
            "sg loss per sum (low → high)": " / ".join(f"{sg[k]:.3g}" for k in sorted(sg))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--steps", type=int, default=234, help="training steps (234: one epoch)")
    parser.add_argument("--units", type=int, default=3, help="residual units")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, network")
    parser.add_argument("--sg_lr", type=float, default=1e-4, help="Adam, synthesizers")
    parser.add_argument("--synth", default="linear", choices=["linear", "default"])
    parser.add_argument("--time_rounds", type=int, default=6)
    parser.add_argument("--time_block", type=int, default=10)
    parser.add_argument("--name", default="residual_cnn", help="results file stem")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min)")
    args = parser.parse_args()
    for name in ("steps", "units", "filters", "batch", "time_rounds", "time_block"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if args.quick:
        args.steps, args.units, args.filters, args.batch = 10, 2, 4, 64
        args.time_rounds, args.time_block = 2, 3
        args.seeds, args.name = args.seeds[:1], f"{args.name}_quick"
    data = load(paths.require_mnist())
    runs_file = paths.RESULTS / f"{args.name}_runs.jsonl"
    done = run_records.read(runs_file)
    for seed in args.seeds:
        todo = [m for m in args.modes if run_key(m, seed, args) not in done]
        if not todo:
            continue
        for record in train_seed(todo, seed, data, args):
            record["key"] = run_key(record["mode"], seed, args)
            done[record["key"]] = record
            run_records.append(runs_file, record)
    wanted = {run_key(m, s, args) for m in args.modes for s in args.seeds}
    records = [r for k, r in done.items() if k in wanted]
    tables.write_results(
        args.name, "Residual CNN on MNIST decoupled at its residual sums: backprop vs DNI vs cDNI",
        ["mode", "seeds", "test error % per seed", "mean test error %", "Δ vs backprop (points)",
         "step ms", "time / backprop", "sg loss per sum (low → high)"], table_rows(records, args),
        notes=[f"Network: stem conv 3x3/2 ({args.filters} filters) + BN + ReLU, {args.units} "
               f"residual units (conv-BN-ReLU-conv-BN + identity, Add, ReLU) at 14x14x"
               f"{args.filters}, global average pooling, Dense(10); every Add decoupled.",
               f"Budget: {args.steps} steps of {args.batch} ({args.steps * args.batch / 60000:.2f} "
               f"epochs), Adam {args.lr} (network), {args.sg_lr} (synthesizers); synthesizer: "
               f"{args.synth} (see the module docstring); test error on the 10,000 test images.",
               f"time / backprop: median of per-round ratios over {args.time_rounds} interleaved "
               f"rounds of {args.time_block} steps after training."],
        runs=records)


if __name__ == "__main__":
    main()
