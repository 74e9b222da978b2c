"""Weight checksums of a run directory's newest checkpoint (to show that a change left training unchanged).

Prints the checkpoint's path, a sha256 over every tensor sorted by key, and a
key-independent sha256 over the sorted per-tensor hashes of the weights and
statistics (optimizer slots left out), so that two runs can be compared even
if a refactoring renamed checkpoint keys:

    python train.py --flagfile=configs/quick.cfg --data_path=../shared/data/mnist.npz \
        --deterministic --plots=false --model_dir=/tmp/quick
    python bench/checkpoint_checksum.py /tmp/quick
"""

import hashlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402


def checksums(model_dir):
    """`(path, all-tensors sha256, weights sha256, keys, weight tensors)` of the newest checkpoint."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if path is None:
        raise SystemExit(f"no checkpoint in {model_dir}/checkpoints")
    reader = tf.train.load_checkpoint(path)
    keys = sorted(key for key in reader.get_variable_to_shape_map()
                  if key != "_CHECKPOINTABLE_OBJECT_GRAPH")
    everything, weights = hashlib.sha256(), []
    for key in keys:
        value = reader.get_tensor(key)
        data = value.tobytes() if hasattr(value, "tobytes") else str(value).encode()
        everything.update(key.encode() + data)
        if "_variables/" not in key or "_trainable_variables/" in key:   # no optimizer slots
            weights.append(hashlib.sha256(data).hexdigest())
    weights_hash = hashlib.sha256("".join(sorted(weights)).encode()).hexdigest()
    return path, everything.hexdigest(), weights_hash, len(keys), len(weights)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/checkpoint_checksum.py MODEL_DIR")
    path, everything, weights, keys, count = checksums(sys.argv[1])
    print(f"{path}\nall tensors: {everything[:16]} ({keys} keys)\n"
          f"weights: {weights[:16]} ({count} tensors)")
