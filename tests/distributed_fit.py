"""Trains the same small ODE-Net with and without a distribution strategy and prints
how far the final weights are apart. Run by tests/test_layers.py in a fresh process
(logical devices must be configured before TensorFlow starts).

    python tests/distributed_fit.py mirrored
"""

import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from tfode.layers import ConcatMLP, ODEBlock  # noqa: E402


def train(strategy=None):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    y = (x[:, :1] * x[:, 1:] > 0).astype("float64")
    scope = strategy.scope() if strategy is not None else tf.init_scope()
    with scope:
        model = keras.Sequential([
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(4, dtype="float64"),
            ODEBlock(ConcatMLP((8,), dtype="float64"), rtol=1e-10, atol=1e-10, dtype="float64"),
            keras.layers.Dense(1, activation="sigmoid", dtype="float64"),
        ])
        model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy", jit_compile=False)
    start = [w.numpy().copy() for w in model.weights]
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return start, [w.numpy() for w in model.weights]


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "mirrored"
    start, plain = train()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print("REPLICAS", strategy.num_replicas_in_sync)
    _, mirrored = train(strategy)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(plain, mirrored))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(start, plain))
    print("MAXDIFF", diff)
    print("MOVED", moved)
