"""A causal Transformer character LM with every block decoupled: backprop vs DNI vs cDNI.

A small pre-LN Transformer (token + learned position embedding; per block
LayerNorm → causal MultiHeadAttention → residual Add, LayerNorm → FFN(4d,
GELU) → residual Add; final LayerNorm → Dense(V)) learns the characters of a
local text (default: the license notices shipped with the installed
TensorFlow package, as `bench/rnn.py` uses; the last 10 % is held out). Each
block is one Keras layer wrapped in a `DecoupledLayer`: its output, the
residual stream, is what the synthesizer predicts the gradient of. The
synthesizer is per position (`h` is `(batch, time, d)`): a zero-initialised
Dense on the last axis, or a causal Conv1D (kernel 3); cDNI gives it the
next-token targets as one-hot context `(batch, time, V)`.

A variant is a mode plus options, written `MODE[:key=value,...]`:

    backprop | dni | cdni
    synth=dense|conv      per-position Dense (default) or causal Conv1D, kernel 3
    sg_lr=1e-4            Adam rate of the synthesizers (default: --lr)
    clip=1.0              sg_clip_norm: per-example bound on the applied ĝ
    anchor=10             true_gradient_every: regress on the true ∂L/∂h every 10 steps
    decouple=123          which blocks are decoupled (0 = lowest); default all

All variants of one seed train in lockstep in this process, from the same
initial weights on the same batches, `--block` steps each in an order rotated
from block to block, so their step times compare round by round (the ratio
to backprop in the table is the median of the per-round ratios). Each finished
(variant, seed) is appended to `bench/results/transformer_lm_runs.jsonl`; a
rerun skips those already there. At the end of a run the synthetic and true
gradients of every decoupled block are compared on held-out batches (cosine
over the whole batch tensor, `DNITrainer.inspect`).

The multiply-add floor counts, per token, the network's forward MACs `F`
(projections 4d², attention scores and mixing 2·T·d as computed (full, then
masked), FFN 8d², head d·V), a backprop step as 3F, and a decoupled step as
3F plus, per decoupled block, twice the synthesizer's forward MACs (its
forward and its weight gradient of the regression; `(d + V)·d` for a cDNI
Dense synthesizer, `3·(d + V)·d` for the kernel-3 Conv1D) and, with
`anchor=k`, an extra true backward pass (2F) every k steps.

    python bench/transformer_lm.py --variants backprop dni cdni --seeds 0 1 2
    python bench/transformer_lm.py --name transformer_lm_probes --seeds 0 \\
        --variants backprop dni dni:clip=1 dni:sg_lr=1e-4 dni:anchor=5 dni:decouple=3
    python bench/transformer_lm.py --variants backprop dni dni:synth=conv cdni cdni:synth=conv \\
        --seeds 0 --steps 150 --name transformer_lm_synth
    python bench/transformer_lm.py --quick
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import paths, run_records, tables  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

OPTIONS = {"synth": str, "sg_lr": float, "clip": float, "anchor": int, "decouple": str}
MODES = ("backprop", "dni", "cdni")


def parse_variant(text):
    """`"dni:sg_lr=1e-4,clip=1"` → `{"mode": "dni", "sg_lr": 1e-4, "clip": 1.0}`."""
    mode, _, rest = text.partition(":")
    if mode not in MODES:
        raise SystemExit(f"--variants: {text!r} must start with one of {MODES}")
    variant = {"mode": mode}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in OPTIONS or not value:
            raise SystemExit(f"--variants: {item!r} in {text!r}: use key=value with key in "
                             f"{sorted(OPTIONS)}")
        variant[key] = OPTIONS[key](value)
    if variant.get("synth", "dense") not in ("dense", "conv"):
        raise SystemExit(f"--variants: synth must be dense or conv in {text!r}")
    return variant


# ------------------------------------------------------------------ model

@keras.saving.register_keras_serializable(package="bench")
class TokenAndPosition(keras.layers.Layer):
    """Token embedding plus a learned position embedding."""

    def __init__(self, vocabulary, length, dim, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary, self.length, self.dim = vocabulary, length, dim
        self.tokens = keras.layers.Embedding(vocabulary, dim, name="tokens")
        self.positions = keras.layers.Embedding(length, dim, name="positions")

    def call(self, ids):
        return self.tokens(ids) + self.positions(keras.ops.arange(keras.ops.shape(ids)[1]))

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "length": self.length,
                "dim": self.dim}


@keras.saving.register_keras_serializable(package="bench")
class Block(keras.layers.Layer):
    """Pre-LN Transformer block; returns the residual stream."""

    def __init__(self, dim, heads, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.attention = keras.layers.MultiHeadAttention(heads, dim // heads, name="attention")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")
        self.up = keras.layers.Dense(4 * dim, activation="gelu", name="up")
        self.down = keras.layers.Dense(dim, name="down")

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.up.build(input_shape)
        self.down.build((*input_shape[:-1], 4 * self.dim))
        self.built = True

    def call(self, x, training=None):
        a = self.norm1(x)
        x = x + self.attention(a, a, use_causal_mask=True, training=training)
        return x + self.down(self.up(self.norm2(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads}


@keras.saving.register_keras_serializable(package="bench")
class PositionSynthesizer(keras.layers.Layer):
    """Zero-initialised per-position linear synthesizer for `(batch, time, d)` activations.

    `kernel_size=1`: a Dense on the last axis; more: a causal Conv1D (position
    t sees positions t-k+1..t). Used where the library has no rank-3 synthesizer.
    """

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, h_shape, context_shape=None):
        zeros = {"kernel_initializer": "zeros", "bias_initializer": "zeros", "name": "output"}
        self.conv = (keras.layers.Dense(h_shape[-1], **zeros) if self.kernel_size == 1 else
                     keras.layers.Conv1D(h_shape[-1], self.kernel_size, padding="causal", **zeros))
        features = h_shape[-1] + (context_shape[-1] if context_shape else 0)
        self.conv.build((None, h_shape[1], features))

    def call(self, h, context=None, training=None):
        if context is not None:
            h = keras.ops.concatenate([h, keras.ops.cast(context, h.dtype)], axis=-1)
        return self.conv(h)

    def compute_output_shape(self, h_shape, context_shape=None):
        return h_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


def _works(synthesizer, args):
    try:
        return tuple(synthesizer(np.zeros((1, args.context, args.dim), "float32")).shape) == (
            1, args.context, args.dim)
    except Exception:  # the library's rank-2-only synthesizers
        return False


def make_synthesizer(kind, args):
    """`(synthesizer, its name)`: the library's per-position one of `kind` if it has one.

    "dense": linear `DenseSynthesizer` on rank-3 activations; "conv": a causal
    Conv1D synthesizer of kernel 3. Else this script's `PositionSynthesizer`.
    """
    from sg_keras import synthesizers

    if kind == "dense":
        candidates = [("DenseSynthesizer", {})]
    else:
        candidates = [(name, {"kernel_size": 3}) for name in
                      ("CausalConv1DSynthesizer", "Conv1DSynthesizer", "CausalConvSynthesizer")]
    for name, kwargs in candidates:
        cls = getattr(synthesizers, name, None)
        if cls is not None and _works(cls(**kwargs), args):
            return cls(**kwargs), f"sg_keras.synthesizers.{name}"
    kernel = 1 if kind == "dense" else 3
    return PositionSynthesizer(kernel), f"bench PositionSynthesizer(kernel {kernel})"


def decoupled_blocks(variant, blocks):
    spec = variant.get("decouple")
    return list(range(blocks)) if spec is None else sorted({int(c) for c in spec})


def build_model(variant, vocabulary, args):
    """The LM as a DNIModel; blocks chosen by `decouple` are DecoupledLayers."""
    import sg_keras

    context_dim = vocabulary if variant["mode"] == "cdni" else None
    ids = keras.Input((args.context,), dtype="int32")
    x = TokenAndPosition(vocabulary, args.context, args.dim, name="embed")(ids)
    synth_name = None
    for index in range(args.blocks):
        block = Block(args.dim, args.heads, name=f"block{index}")
        if index in decoupled_blocks(variant, args.blocks):
            synthesizer, synth_name = make_synthesizer(variant.get("synth", "dense"), args)
            block = sg_keras.DecoupledLayer(block, synthesizer=synthesizer,
                                            context_dim=context_dim, name=f"d{index}")
        x = block(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    logits = keras.layers.Dense(vocabulary, name="head")(x)
    model = sg_keras.DNIModel(ids, logits)
    options = {"mode": variant["mode"]}
    if variant["mode"] != "backprop":
        options.update(sg_clip_norm=variant.get("clip"),
                       true_gradient_every=variant.get("anchor", 0))
    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  sg_optimizer=keras.optimizers.Adam(variant.get("sg_lr", args.lr)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **options)
    return model, synth_name


# ------------------------------------------------------------------ counting

def forward_macs(args, vocabulary):
    """The network's forward multiply-adds per token."""
    d, t = args.dim, args.context
    return args.blocks * (4 * d * d + 2 * t * d + 8 * d * d) + d * vocabulary


def mac_floor(variant, args, vocabulary):
    """Multiply-adds of the variant's step over a backprop step (see the module docstring)."""
    f = forward_macs(args, vocabulary)
    if variant["mode"] == "backprop":
        return 1.0
    d = args.dim
    inputs = d + (vocabulary if variant["mode"] == "cdni" else 0)
    kernel = 3 if variant.get("synth", "dense") == "conv" else 1
    synth = len(decoupled_blocks(variant, args.blocks)) * 2 * kernel * inputs * d
    anchor = 2 * f / variant["anchor"] if variant.get("anchor") else 0.0
    return (3 * f + synth + anchor) / (3 * f)


# ------------------------------------------------------------------ data, scoring

def windows(ids, length, count, rng):
    starts = rng.integers(0, len(ids) - length - 1, size=count)
    x = np.stack([ids[s:s + length] for s in starts])
    y = np.stack([ids[s + 1:s + length + 1] for s in starts])
    return x, y


def held_out_windows(ids, length, chars):
    n = (min(len(ids), chars) - 1) // length
    x = ids[:n * length].reshape(n, length)
    y = ids[1:n * length + 1].reshape(n, length)
    return x, y


def bits_per_char(model, x, y):
    logits = model.predict(x, batch_size=64, verbose=0).astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=-1))
    picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return float(np.mean(log_z - picked) / math.log(2))


def cosines(trainer, x, y, batch):
    """Per decoupled block, the cosine of ĝ and B·∂L/∂h over whole held-out batches."""
    dots, synth, true = {}, {}, {}
    for start in range(0, len(x) - batch + 1, batch):
        for key, parts in trainer.inspect(x[start:start + batch], y[start:start + batch]).items():
            g, t = parts["synthetic"].astype("float64"), parts["true"].astype("float64")
            dots[key] = dots.get(key, 0.0) + float(np.sum(g * t))
            synth[key] = synth.get(key, 0.0) + float(np.sum(g * g))
            true[key] = true.get(key, 0.0) + float(np.sum(t * t))
    return {key: dots[key] / math.sqrt(synth[key] * true[key] + 1e-30) for key in dots}


def inspect_cosines(model, variant, x, y, batch):
    """Cosines per block, or `{"error": ...}` when the library cannot inspect this model."""
    import sg_keras

    if variant["mode"] == "backprop":
        return {}
    try:
        trainer = sg_keras.DNITrainer(
            model, mode=variant["mode"],
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            optimizer=keras.optimizers.Adam(0.0), sg_optimizer=keras.optimizers.Adam(0.0))
        return cosines(trainer, x, y, batch)
    except Exception as error:  # reported in the results, not fatal
        return {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"}


# ------------------------------------------------------------------ runs

def run_key(variant_text, seed, args):
    return json.dumps({"variant": variant_text, "seed": seed, "steps": args.steps,
                       "blocks": args.blocks, "dim": args.dim, "heads": args.heads,
                       "context": args.context, "batch": args.batch, "lr": args.lr},
                      sort_keys=True)


def train_group(texts, seed, text, args):
    """Trains the variants `texts` of one seed in lockstep; returns one record per variant."""
    ids = text.ids
    split = int(0.9 * len(ids))
    train_ids, held_ids = ids[:split], ids[split:]
    vocabulary = len(text.vocabulary)
    eval_x, eval_y = held_out_windows(held_ids, args.context, args.eval_chars)
    scored = args.cosine_batches * args.batch
    cos_x, cos_y = eval_x[:scored], eval_y[:scored]
    variants = {t: parse_variant(t) for t in texts}
    models, synth_names = {}, {}
    for t, variant in variants.items():
        keras.utils.set_random_seed(seed)   # same initial weights in every variant
        models[t], synth_names[t] = build_model(variant, vocabulary, args)
    rng = np.random.default_rng(seed)
    batches = [windows(train_ids, args.context, args.batch, rng) for _ in range(args.steps)]
    times = {t: [] for t in texts}
    losses = {t: [] for t in texts}
    sg_losses = {t: {} for t in texts}
    curves = {t: [] for t in texts}
    start = time.time()
    for round_index, first in enumerate(range(0, args.steps, args.block)):
        shift = round_index % len(texts)
        for t in texts[shift:] + texts[:shift]:
            begin = time.perf_counter()
            for step in range(first, min(first + args.block, args.steps)):
                logs = models[t].train_on_batch(*batches[step], return_dict=True)
                losses[t].append(float(logs["loss"]))
                for key, value in logs.items():
                    if key.startswith("sg_loss/"):
                        sg_losses[t].setdefault(key.split("/", 1)[1], []).append(float(value))
            times[t].append((time.perf_counter() - begin) / (min(first + args.block, args.steps)
                                                             - first))
        if (first + args.block) % args.eval_every < args.block or first + args.block >= args.steps:
            step = min(first + args.block, args.steps)
            line = []
            for t in texts:
                bpc = bits_per_char(models[t], eval_x[:args.curve_windows],
                                    eval_y[:args.curve_windows])
                curves[t].append([step, bpc])
                line.append(f"{t} {bpc:.3f}")
            print(f"seed {seed} step {step} ({time.time() - start:.0f} s): held-out BPC "
                  + ", ".join(line), flush=True)
    records = []
    tail = max(1, args.steps // 10)
    for t, variant in variants.items():
        record = {"variant": t, "seed": seed, "steps": args.steps, "mode": variant["mode"],
                  "synthesizer": synth_names[t] if variant["mode"] != "backprop" else None,
                  "held_out_bpc": bits_per_char(models[t], eval_x, eval_y),
                  "train_loss_tail": statistics.mean(losses[t][-tail:]) / math.log(2),
                  "step_ms_rounds": [1e3 * s for s in times[t][1:]],  # round 0: tracing
                  "curve": curves[t],
                  "sg_loss_tail": {k: statistics.mean(v[-tail:]) for k, v in sg_losses[t].items()},
                  "cosine": inspect_cosines(models[t], variant, cos_x, cos_y, args.batch),
                  "mac_floor": mac_floor(variant, args, vocabulary),
                  "decoupled": decoupled_blocks(variant, args.blocks)}
        if "backprop" in times:
            per_round = [a / b for a, b in zip(times[t][1:], times["backprop"][1:])]
            record["time_ratio_rounds"] = per_round
        records.append(record)
        brief = {k: v for k, v in record.items()
                 if k not in ("step_ms_rounds", "curve", "time_ratio_rounds")}
        print(json.dumps(brief), flush=True)
    return records


# ------------------------------------------------------------------ table

def _cos_text(cosine, blocks):
    if not cosine:
        return ""
    if "error" in cosine:
        return "n/a"
    return " / ".join(f"{cosine[f'd{i}']:.2f}" if f"d{i}" in cosine else "-" for i in range(blocks))


def table_rows(records, texts, args):
    by_variant = {t: sorted((r for r in records if r["variant"] == t), key=lambda r: r["seed"])
                  for t in texts}
    base = {r["seed"]: r["held_out_bpc"] for r in by_variant.get("backprop", [])}
    rows = []
    for t in texts:
        runs = by_variant[t]
        if not runs:
            continue
        bpcs = [r["held_out_bpc"] for r in runs]
        gaps = [r["held_out_bpc"] - base[r["seed"]] for r in runs if r["seed"] in base]
        ratios = [x for r in runs for x in r.get("time_ratio_rounds", [])]
        ms = [x for r in runs for x in r["step_ms_rounds"]]
        mean_cos = {}
        for key in {k for r in runs for k in r["cosine"] if k != "error"}:
            mean_cos[key] = statistics.mean(r["cosine"][key] for r in runs if key in r["cosine"])
        if any("error" in r["cosine"] for r in runs):
            mean_cos = {"error": next(r["cosine"]["error"] for r in runs if "error" in r["cosine"])}
        sg = {}
        for key in {k for r in runs for k in r["sg_loss_tail"]}:
            sg[key] = statistics.mean(r["sg_loss_tail"][key] for r in runs
                                      if key in r["sg_loss_tail"])
        rows.append({
            "variant": t, "seeds": " ".join(str(r["seed"]) for r in runs),
            "held-out BPC per seed": " / ".join(f"{b:.3f}" for b in bpcs),
            "mean BPC": statistics.mean(bpcs),
            "Δ vs backprop": statistics.mean(gaps) if gaps and t != "backprop" else None,
            "step ms": statistics.median(ms) if ms else None,
            "time / backprop": statistics.median(ratios) if ratios else None,
            "MAC floor": runs[0]["mac_floor"],
            f"cosine d0..d{args.blocks - 1}": _cos_text(mean_cos, args.blocks),
            f"sg loss d0..d{args.blocks - 1}": " / ".join(
                f"{sg[f'd{i}']:.3g}" if f"d{i}" in sg else "-" for i in range(args.blocks)),
            "cosine_raw": mean_cos, "sg_loss_raw": sg})
    return rows


TARGETS = {"dni": 0.15, "cdni": 0.05}   # bits per character above backprop, same budget


def verdicts(rows):
    """Notes on the targets (plain `dni` and `cdni` rows) and on conv vs dense synthesizers."""
    notes = []
    by_name = {row["variant"]: row for row in rows}
    for name, target in TARGETS.items():
        gap = by_name.get(name, {}).get("Δ vs backprop")
        if gap is not None:
            verdict = "met" if gap <= target else f"missed by {gap - target:.2f}"
            notes.append(f"Target {name}: within {target} bits per character of backprop; "
                         f"measured {gap:+.2f} ({verdict}).")
    for name, row in by_name.items():
        mode, _, options = name.partition(":")
        if "synth=conv" not in options.split(","):
            continue
        rest = ",".join(o for o in options.split(",") if o != "synth=conv")
        dense = mode + (f":{rest}" if rest else "")
        if dense in by_name:
            diff = row["mean BPC"] - by_name[dense]["mean BPC"]
            notes.append(f"{name} vs {dense}: {diff:+.3f} bits per character "
                         f"({'conv' if diff < 0 else 'dense'} better).")
    return notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["backprop", "dni", "cdni"],
                        help="MODE[:key=value,...] (see the module docstring)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, network")
    parser.add_argument("--block", type=int, default=20,
                        help="steps per variant per timing round")
    parser.add_argument("--eval_chars", type=int, default=32768,
                        help="held-out characters scored (from the start of the last 10 %%)")
    parser.add_argument("--eval_every", type=int, default=200, help="steps between curve points")
    parser.add_argument("--curve_windows", type=int, default=64)
    parser.add_argument("--cosine_batches", type=int, default=2)
    parser.add_argument("--no_time_ratio", dest="time_ratio", action="store_false",
                        help="do not retrain a finished backprop run to time new variants "
                             "against it (their time ratio is then left empty)")
    parser.add_argument("--text_path", default=None, help="default: TensorFlow's "
                        "THIRD_PARTY_NOTICES.txt in site-packages")
    parser.add_argument("--name", default="transformer_lm", help="results file stem")
    parser.add_argument("--table", action="store_true", help="only rewrite the table")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min)")
    args = parser.parse_args()
    for name in ("steps", "blocks", "dim", "heads", "context", "batch", "block"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if args.dim % args.heads:
        raise SystemExit("--dim must be a multiple of --heads")
    if args.quick:
        args.steps, args.blocks, args.dim, args.heads, args.context = 20, 2, 32, 2, 32
        args.block, args.eval_chars, args.eval_every, args.batch = 5, 2048, 10, 8
        args.seeds, args.name = args.seeds[:1], f"{args.name}_quick"
    if args.text_path is None:
        import tensorflow as tf
        args.text_path = str(Path(tf.__file__).parent / "THIRD_PARTY_NOTICES.txt")
    from sg_keras.job import sequence_tasks as tasks

    text = tasks.load_text(args.text_path)
    runs_file = paths.RESULTS / f"{args.name}_runs.jsonl"
    done = run_records.read(runs_file)
    if not args.table:
        for seed in args.seeds:
            todo = [t for t in args.variants if run_key(t, seed, args) not in done]
            if not todo:
                continue
            if "backprop" in args.variants and "backprop" not in todo and args.time_ratio:
                todo.insert(0, "backprop")   # the time ratio needs backprop in the same rounds
            for record in train_group(todo, seed, text, args):
                key = run_key(record["variant"], seed, args)
                if key in done:
                    continue
                record["key"] = key
                done[key] = record
                run_records.append(runs_file, record)
    wanted = {run_key(t, s, args) for t in args.variants for s in args.seeds}
    records = [r for k, r in done.items() if k in wanted]
    rows = table_rows(records, args.variants, args)
    vocabulary = len(text.vocabulary)
    f = forward_macs(args, vocabulary)
    tables.write_results(
        args.name, "Causal Transformer char LM, every block decoupled: backprop vs DNI vs cDNI",
        ["variant", "seeds", "held-out BPC per seed", "mean BPC", "Δ vs backprop", "step ms",
         "time / backprop", "MAC floor", f"cosine d0..d{args.blocks - 1}",
         f"sg loss d0..d{args.blocks - 1}"], rows,
        notes=[f"Text: {Path(args.text_path).name} ({len(text.ids)} characters, vocabulary "
               f"{vocabulary}; last 10 % held out, its first {args.eval_chars} characters scored "
               f"in windows of {args.context}).",
               f"Model: {args.blocks} pre-LN blocks, d = {args.dim}, {args.heads} heads, context "
               f"{args.context}, FFN 4d GELU; {f / 1e6:.2f} M forward MACs per token. Budget: "
               f"{args.steps} steps of {args.batch} random windows, Adam {args.lr} (network); "
               "same initial weights and batches in every variant of a seed.",
               "DNI/cDNI: every listed block decoupled at its output (the residual stream), "
               "bootstrapped targets, zero-initialised per-position synthesizer (Dense on the "
               "last axis unless synth=conv); cDNI context: one-hot next-token targets "
               "(batch, time, V).",
               "time / backprop: median over timing rounds of the per-round ratio (round 0, "
               f"tracing, left out), {args.block} steps per variant per round, interleaved. "
               "MAC floor: see the module docstring.",
               "Cosine: synthetic vs true gradient (B·∂L/∂h) per decoupled block at the end, "
               f"over {args.cosine_batches} held-out batches; sg loss: mean synthesizer loss "
               "over the last 10 % of steps (blocks 0 = lowest).", *verdicts(rows)],
        runs=records)


if __name__ == "__main__":
    main()
