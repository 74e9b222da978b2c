"""Training speed and peak memory of backprop, DNI and cDNI on the 3-layer MNIST FCN.

All configurations are the FCN of `sg_keras.job.networks.fcn` (two decoupled
hidden blocks of 256, batch 256, Adam 1e-3) built by `train.py`'s own
`build_trainer`, with linear or MLP (2x1024) synthesizers, without XLA and
with `DNITrainer(jit_compile=True)`. Measures

* steps/s and examples/s: every trainer lives in this one process and
  `train_step` is timed in blocks that interleave the configurations (see
  `common.time_trainers`), after a warm-up; no cosine measurement
  (measure_every=0), except the "measured" rows (measure_every=1), whose step
  time over the plain one is the cost of a measured step;
* step-time ratios over backprop (same compiler setting) and XLA's speed-up
  (step time without XLA over with XLA, same configuration);
* peak resident memory of training: each configuration runs --memory_steps
  steps in a fresh child process, which loads the data, resets its
  high-water mark (writing 5 to /proc/self/clear_refs) and reports its peak
  resident memory after the steps (VmHWM from /proc/self/status; a child's
  ru_maxrss would count the parent's memory at fork time), together with a
  child that only imports TensorFlow, loads the data and resets: its value
  is the resident memory every configuration's peak starts from.

Target: DNI with a linear synthesizer within 1.15x of backprop's step time.
Writes bench/results/speed.{json,md} and speed.png.

    python bench/speed.py                                              # reported budget
    python bench/speed.py --rounds 2 --block 5 --memory_steps 5 --no_xla   # smoke check
"""

import argparse
import statistics
import subprocess
import sys

from matplotlib.figure import Figure

import common

CONFIGS = {
    "backprop": {"mode": "backprop"},
    "dni linear": {"mode": "dni"},
    "cdni linear": {"mode": "cdni"},
    "dni mlp 2x1024": {"mode": "dni", "synth_layers": 2},
    "cdni mlp 2x1024": {"mode": "cdni", "synth_layers": 2},
    "dni linear, measured": {"mode": "dni", "measure_every": 1},
    "cdni linear, measured": {"mode": "cdni", "measure_every": 1},
}
NO_MODEL = "(TensorFlow + data only)"
XLA = " +XLA"
TARGET = 1.15   # DNI (linear) step time over backprop's
PEAK_RSS = "peak RSS MB: "


def settings(name):
    """`Config` settings of a row name such as "dni linear +XLA"."""
    base = name.removesuffix(XLA)
    return {"measure_every": 0, **CONFIGS[base], "jit_compile": name.endswith(XLA)}


def run_child(name, steps):
    """In this process: load the data, train `name` `steps` steps, print the peak RSS since."""
    train_split, _ = common.load_mnist()
    batches = common.batches(train_split, 20)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")   # VmHWM := current RSS, so loading the data leaves no peak
    if name != NO_MODEL:
        trainer = common.make_trainer(train_split.x.shape[1:], **settings(name))
        for index in range(steps):
            trainer.train_step(*batches[index % len(batches)])
    print(f"{PEAK_RSS}{common.status_mb('VmHWM'):.1f}")


def peak_rss_mb(name, steps):
    """Peak RSS (VmHWM) of a fresh process training `name` for `steps` steps; None on failure."""
    child = subprocess.run([sys.executable, __file__, "--peak_rss_of", name,
                            "--memory_steps", str(steps)], capture_output=True, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith(PEAK_RSS)]
    if child.returncode != 0 or not lines:
        print(f"peak RSS of {name} failed:\n{child.stderr[-2000:]}", flush=True)
        return None
    return float(lines[-1].removeprefix(PEAK_RSS))


def speed_figure(rows):
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.subplots()
    names = list(CONFIGS)
    for offset, suffix in ((-0.2, ""), (0.2, XLA)):
        values = [next((r["steps/s"] for r in rows if r["configuration"] == n + suffix
                        and r.get("steps/s")), 0) for n in names]
        axes.barh([i + offset for i in range(len(names))], values, height=0.4,
                  label="XLA" if suffix else "no XLA")
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set(title="train_step throughput, 3-layer MNIST FCN, batch 256", xlabel="steps/s")
    axes.legend()
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timing rounds")
    parser.add_argument("--block", type=int, default=40, help="steps per timing block")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps per trainer")
    parser.add_argument("--memory_steps", type=int, default=300,
                        help="steps of each peak-memory child process")
    parser.add_argument("--no_xla", action="store_true", help="leave out the XLA rows")
    parser.add_argument("--peak_rss_of", help="internal: the child process of one memory row")
    args = parser.parse_args()
    common.require_mnist()
    if args.peak_rss_of:
        return run_child(args.peak_rss_of, args.memory_steps)

    names = list(CONFIGS) + ([] if args.no_xla else [name + XLA for name in CONFIGS])
    times, errors = common.time_trainers({name: settings(name) for name in names},
                                         warmup=args.warmup, rounds=args.rounds, block=args.block)
    memory = {name: peak_rss_mb(name, args.memory_steps) for name in [NO_MODEL] + names}

    rows = [{"configuration": NO_MODEL, "peak RSS MB": memory[NO_MODEL]}]
    for name in names:
        row = {"configuration": name, "peak RSS MB": memory[name]}
        if name in errors:
            row["error"] = errors[name]
        else:
            step = statistics.median(times[name])
            xla = name.endswith(XLA)
            baseline = "backprop" + (XLA if xla else "")
            row.update({"step ms": 1000 * step, "steps/s": 1 / step,
                        "examples/s": common.BATCH_SIZE / step})
            if baseline in times:
                row["ratio_vs_backprop"], row["step time / backprop"] = common.ratio(
                    times, name, baseline)
            if xla and name.removesuffix(XLA) in times:
                row["xla_speedup"], row["XLA speed-up"] = common.ratio(
                    times, name.removesuffix(XLA), name)
        rows.append(row)

    notes = [f"Step times: median over {args.rounds} rounds of {args.block} train_step calls "
             "per configuration, all configurations interleaved in one process after "
             f"{args.warmup} warm-up steps; ratios: median of the per-round ratios "
             "(interquartile range in brackets).",
             f"Peak RSS: VmHWM of a fresh child that trains {args.memory_steps} steps, reset "
             "after the child loaded the data (the training peak; loading's own peak is left "
             f"out); '{NO_MODEL}' is the RSS at that reset, the floor every peak starts from."]
    if "dni linear" in times and "backprop" in times:
        dni, text = common.ratio(times, "dni linear", "backprop")
        notes.append(f"Target: DNI (linear) within {TARGET}x of backprop's step time: "
                     f"{text}x, " + ("met." if dni <= TARGET else f"missed by {dni - TARGET:.2f}."))
    for mode in ("dni", "cdni"):
        measured, plain = f"{mode} linear, measured", f"{mode} linear"
        if measured in times and plain in times:
            cost, text = common.ratio(times, measured, plain)
            notes.append(f"A measured {mode} step (true backward pass + cosine) takes {text}x "
                         f"a plain one: {(cost - 1) / 100:+.2%} on average at the default "
                         "measure_every=100.")
    notes += [f"{name} failed: {error}" for name, error in errors.items()]
    common.write_results(
        "speed", "Training speed and peak memory: backprop vs DNI vs cDNI, with and without XLA",
        ["configuration", "step ms", "steps/s", "examples/s", "step time / backprop",
         "XLA speed-up", "peak RSS MB", "error"], rows, notes, step_times_s=times)
    common.save_figure(speed_figure(rows), "speed")


if __name__ == "__main__":
    main()
