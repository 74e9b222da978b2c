"""The paper's CNN on MNIST: test error of backprop, DNI and cDNI at 3 and 4 layers.

`--model=cnn` of train.py (`sg_keras.job.networks.cnn`): `layers - 1` blocks
of 5×5 convolutions (Conv2D → BatchNorm → ReLU → 3×3 pooling with stride 2,
max after the first block, average after the others), each decoupled with a
`ConvSynthesizer` (two hidden 5×5 conv layers, zero-initialised output), and
a linear head. The paper uses 128 filters in the network and the
synthesizers; on this CPU that is seconds per step, so the default here is
--filters 32 and a short budget: compare the three modes with each other,
not with the paper's absolute numbers. CIFAR-10 (`--dataset=cifar10`) needs
a download and is not measured here.

Writes bench/results/cnn.{json,md}.

    python bench/cnn.py                                        # reported budget
    python bench/cnn.py --epochs 0.05 --layers 3 --filters 4     # smoke check
"""

import argparse
import statistics

from benchlib import tables, training

MODES = ("backprop", "dni", "cdni")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--filters", type=int, default=32)
    args, budget = training.parse_budget(parser, epochs=2.0)

    rows = []
    for layers in args.layers:
        for mode in args.modes:
            errors, walls, _ = training.train_seeds(
                f"cnn/cnn{layers}_{mode}_f{args.filters}", args.seeds, model="cnn", mode=mode,
                num_layers=layers, filters=args.filters, eval_every=budget["train_steps"],
                measure_every=0, **budget)
            rows.append({"layers": layers, "mode": mode, "test error %": statistics.mean(errors),
                         "per seed %": ", ".join(f"{e:.2f}" for e in errors),
                         "wall s": statistics.mean(walls), "per_seed_error": errors})
            print(rows[-1], flush=True)
    notes = [f"MNIST CNN with {args.filters} filters per conv layer and per synthesizer hidden "
             f"layer; budget per cell {args.epochs:g} epochs = {budget['train_steps']} steps of "
             f"batch {training.BATCH_SIZE}, Adam 1e-3 x0.1 at steps "
             f"{', '.join(budget['lr_decay_steps'])}; seeds {args.seeds}; bootstrapped targets."]
    tables.write_results("cnn", "MNIST CNN: backprop, DNI and cDNI",
                         ["layers", "mode", "test error %", "per seed %", "wall s"], rows, notes,
                         budget=budget, seeds=args.seeds, filters=args.filters)


if __name__ == "__main__":
    main()
