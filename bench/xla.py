"""Why XLA (`jit_compile=True`) slows training on this CPU: the evidence.

Three measurements, each with and without XLA, interleaved in one process:

1. the matrix products of the 3-layer MNIST FCN's step at batch 256 (forward
   784x256 and 256x256, and the transposed products of the backward pass),
   alone in a `tf.function`;
2. the whole `DNITrainer` step (backprop and DNI, linear synthesizers);
3. how often the XLA step compiles: the number of traces of the jitted step
   function after training steps with a step-kind schedule and a smaller
   last batch.

The same products are then timed in a child process with TensorFlow's oneDNN
kernels switched off (`TF_ENABLE_ONEDNN_OPTS=0`), the kernels TensorFlow's own
CPU matmul uses by default and XLA's CPU backend does not; and the steps in a
child process limited to one thread (intra- and inter-op), which shows how
much of the gap is the plain executor running independent ops concurrently.

Writes bench/results/xla.{json,md}.

    python bench/xla.py                     # reported budget
    python bench/xla.py --rounds 2 --steps 5   # smoke check
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import paths, tables, timing

SHAPES = {"x@W1 (256x784 . 784x256)": ((256, 784), (784, 256), False),
          "h@W2 (256x256 . 256x256)": ((256, 256), (256, 256), False),
          "dW1 = x^T g (784x256 . 256x256)": ((256, 784), (256, 256), True)}
CHILDREN = ("no_onednn", "single_thread")


def matmul_times(rounds, steps):
    """Median seconds per product, without and with XLA, for each of `SHAPES`."""
    import tensorflow as tf

    results = {}
    for name, (a_shape, b_shape, transpose) in SHAPES.items():
        a = tf.random.normal(a_shape)
        b = tf.random.normal(b_shape)
        functions = {jit: tf.function(lambda a, b: tf.matmul(a, b, transpose_a=transpose),
                                      jit_compile=jit) for jit in (False, True)}
        times = {False: [], True: []}
        for jit, function in functions.items():
            function(a, b).numpy()
        for _ in range(rounds):
            for jit, function in functions.items():
                start = time.perf_counter()
                for _ in range(steps):
                    out = function(a, b)
                out.numpy()
                times[jit].append((time.perf_counter() - start) / steps)
        results[name] = {"plain us": 1e6 * statistics.median(times[False]),
                         "xla us": 1e6 * statistics.median(times[True])}
    return results


def step_times(rounds, steps):
    """Median seconds per DNITrainer step, without and with XLA, for backprop and DNI."""
    settings = {f"{mode}{' +XLA' if jit else ''}": {"mode": mode, "measure_every": 0,
                                                       "jit_compile": jit}
                for mode in ("backprop", "dni") for jit in (False, True)}
    times, errors = timing.time_trainers(settings, warmup=10, rounds=rounds, block=steps)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}, errors


def compile_count(steps):
    """Traces of the XLA step after `steps` steps with a measure schedule and a short batch."""
    train_split, _ = paths.load_mnist()
    held = timing.batches(train_split, 4)
    trainer = timing.make_trainer(train_split.x.shape[1:], mode="dni", measure_every=3,
                                  true_gradient_every=5, jit_compile=True)
    for index in range(steps):
        trainer.train_step(*held[index % len(held)])
    x, y = held[0]
    trainer.train_step(x[:100], y[:100])   # a last, smaller batch
    return {"steps": steps + 1, "traces": trainer._train.experimental_get_tracing_count()}


def run_child(kind, args, **env):
    """The JSON a `--child KIND` process prints ({} if it failed)."""
    child = subprocess.run([sys.executable, __file__, "--child", kind, "--rounds",
                            str(args.rounds), "--steps", str(args.steps)],
                           capture_output=True, text=True, env={**os.environ, **env})
    if child.returncode != 0:
        print(f"{kind} child failed:\n{child.stderr[-2000:]}", flush=True)
        return {}
    return json.loads(child.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30, help="calls per timed block")
    parser.add_argument("--child", choices=CHILDREN, help="internal: print JSON times")
    args = parser.parse_args()
    if args.child == "no_onednn":
        print(json.dumps(matmul_times(args.rounds, args.steps)))
        return
    if args.child == "single_thread":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        print(json.dumps(step_times(args.rounds, args.steps)[0]))
        return
    paths.require_mnist()
    matmuls = matmul_times(args.rounds, args.steps)
    no_onednn = run_child("no_onednn", args, TF_ENABLE_ONEDNN_OPTS="0")
    single = run_child("single_thread", args)
    steps, errors = step_times(args.rounds, args.steps)
    compiles = compile_count(args.steps)

    rows = []
    for name, times in matmuls.items():
        rows.append({"what": f"matmul {name}", "plain": f"{times['plain us']:.0f} us",
                     "XLA": f"{times['xla us']:.0f} us",
                     "XLA / plain": times["xla us"] / times["plain us"],
                     "plain, oneDNN off": (f"{no_onednn[name]['plain us']:.0f} us"
                                           if name in no_onednn else "")})
    for mode in ("backprop", "dni"):
        if mode in steps and f"{mode} +XLA" in steps:
            rows.append({"what": f"DNITrainer step, {mode}", "plain": f"{steps[mode]:.2f} ms",
                         "XLA": f"{steps[mode + ' +XLA']:.2f} ms",
                         "XLA / plain": steps[mode + " +XLA"] / steps[mode]})
        if mode in single and f"{mode} +XLA" in single:
            rows.append({"what": f"DNITrainer step, {mode}, 1 thread",
                         "plain": f"{single[mode]:.2f} ms",
                         "XLA": f"{single[mode + ' +XLA']:.2f} ms",
                         "XLA / plain": single[mode + " +XLA"] / single[mode]})
    notes = [f"XLA step traced {compiles['traces']} times in {compiles['steps']} steps (a "
             "schedule with plain, measured and true-target steps, and one smaller last batch)."]
    notes += [f"{name} failed: {error}" for name, error in errors.items()]
    tables.write_results("xla", "XLA on this CPU: matrix products and the training step",
                         ["what", "plain", "XLA", "XLA / plain", "plain, oneDNN off"], rows,
                         notes, compiles=compiles, no_onednn=no_onednn, single_thread=single)


if __name__ == "__main__":
    main()
