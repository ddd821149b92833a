"""Trains the same small ODE-Net with and without a distribution strategy. Run by
tests/test_layers.py in fresh processes (devices and collectives must be configured
before TensorFlow starts).

    python tests/distributed_fit.py mirrored            # prints REPLICAS, MAXDIFF, MOVED
    python tests/distributed_fit.py plain OUT.npz        # single process, weights to OUT
    python tests/distributed_fit.py worker I P0,P1 OUT.npz   # one MultiWorkerMirrored worker

Keras 3.15's ``model.fit`` fails under MultiWorkerMirroredStrategy with any model (it
cannot convert the PerReplica batch), so the worker and plain modes use a custom loop
with ``strategy.run``: each worker takes its half of every batch, the gradients are
summed across workers, and plain SGD updates the mirrored weights.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

MODE = sys.argv[1] if len(sys.argv) > 1 else "mirrored"
if MODE == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
elif MODE == "worker":
    ports = sys.argv[3].split(",")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": int(sys.argv[2])},
    })
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()  # must come before any op

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


def custom_loop(strategy):
    """SGD with ``strategy.run``; the plain run is the same loop without a strategy."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    y = (x[:, :1] * x[:, 1:] > 0).astype("float64")
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(4, dtype="float64"),
            ODEBlock(ConcatMLP((8,), dtype="float64"), rtol=1e-10, atol=1e-10, dtype="float64"),
            keras.layers.Dense(1, activation="sigmoid", dtype="float64"),
        ])
    # Initial weights from NumPy: independent of how each process consumed its RNG.
    init = np.random.default_rng(1)
    model.set_weights([init.normal(0, 0.5, w.shape) for w in model.get_weights()])
    loss_fn = keras.losses.BinaryCrossentropy()
    n = strategy.num_replicas_in_sync
    start = [w.numpy().copy() for w in model.trainable_weights]

    @tf.function
    def step(xb, yb):
        def replica_step(xs, ys):
            with tf.GradientTape() as tape:
                # Keras losses divide by the number of replicas under a strategy.
                loss = loss_fn(ys, model(xs))
            grads = tape.gradient(loss, model.trainable_weights)
            return grads

        if n == 1:
            grads = strategy.run(replica_step, args=(xb, yb))
        else:
            task = strategy.cluster_resolver.task_id
            half = tf.shape(xb)[0] // n
            grads = strategy.run(replica_step, args=(xb[task * half:(task + 1) * half],
                                                      yb[task * half:(task + 1) * half]))
        for v, g in zip(model.trainable_weights, grads):  # cross-replica: all copies
            v.assign_sub(0.5 * strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None))

    for _ in range(2):
        for i in range(0, 64, 16):
            step(tf.constant(x[i:i + 16]), tf.constant(y[i:i + 16]))
    return start, [w.numpy() for w in model.trainable_weights]


if __name__ == "__main__":
    if MODE == "mirrored":
        start, plain = train()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        print("REPLICAS", strategy.num_replicas_in_sync)
        _, mirrored = train(strategy)
        print("MAXDIFF", max(float(np.abs(a - b).max()) for a, b in zip(plain, mirrored)))
        print("MOVED", max(float(np.abs(a - b).max()) for a, b in zip(start, plain)))
    elif MODE == "plain":
        start, plain = custom_loop(tf.distribute.get_strategy())
        np.savez(sys.argv[2], *plain, start=np.concatenate([s.ravel() for s in start]))
    else:
        print("REPLICAS", STRATEGY.num_replicas_in_sync)
        _, weights = custom_loop(STRATEGY)
        np.savez(sys.argv[4], *weights)
