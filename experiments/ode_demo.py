"""Spiral demo: learn dy/dt = y^3 A with a neural ODE trained through the adjoint.

The true dynamics and training setup follow the authors' ``ode_demo`` (torchdiffeq
examples): A = [[-0.1, 2], [-2, -0.1]], y(0) = [2, 0], 1000 points on [0, 25];
the model is f(t, y) = Dense(2)(tanh(Dense(50)(y^3))); each iteration fits 20
random sub-trajectories of 10 steps with RMSprop and a mean absolute error. Every
``--test-every`` iterations the whole trajectory is predicted and the forward and
backward function evaluations (NFE-F, NFE-B) are logged, as the paper reports them.

``--keras`` trains the same model as a Keras model, ``ODEBlock`` with
``return_sequences=True``, through ``model.fit`` (NFE as metrics in the progress bar,
``NFELogger`` and ``CSVLogger``); the default path is an explicit GradientTape loop.

Writes ``log.csv``, ``results.json`` and ``trajectories.png`` under ``--out``.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import machine, pyplot, save_figure, script_parser, write_json  # noqa: E402

TRUE_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
TRUE_Y0 = np.array([2.0, 0.0])


def true_trajectory(n_points: int = 1000, t_end: float = 25.0):
    """The spiral the demo learns, solved to 1e-10 by the bridge (DOP853)."""
    import solvers_bridge as sb

    t = np.linspace(0.0, t_end, n_points)
    ys, _ = sb.solve(lambda s, y: (y ** 3) @ TRUE_A, TRUE_Y0, t, "dop853", 1e-10, 1e-10)
    return t, ys


def get_batch(rng, t, ys, batch_time: int, batch_size: int):
    """Random sub-trajectories: initial states (B, 2), times (T,), targets (T, B, 2)."""
    starts = rng.choice(np.arange(len(t) - batch_time), batch_size, replace=False)
    y0 = ys[starts]
    bt = t[:batch_time]
    by = np.stack([ys[starts + i] for i in range(batch_time)])
    return y0, bt, by


def build_model(seed: int):
    """Dense(50, tanh) then Dense(2), weights N(0, 0.1^2), float64 (tolerance 1e-6 needs
    more than float32's round-off)."""
    import keras

    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=0.1, seed=seed)
    model = keras.Sequential([
        keras.Input((2,), dtype="float64"),
        keras.layers.Dense(50, activation="tanh", kernel_initializer=init, dtype="float64"),
        keras.layers.Dense(2, kernel_initializer=init, dtype="float64"),
    ])
    return model


def spiral_dynamics_layer(seed: int):
    """The demo's dynamics as a Keras layer called as ``layer(t, y)`` (for ODEBlock)."""
    import keras

    class SpiralDynamics(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.net = build_model(seed)

        def build(self, input_shape):
            self.built = True

        def call(self, t, y):
            return self.net(y ** 3)

    return SpiralDynamics()


def train_keras(args, t, ys, rng):
    """The Keras path: ODEBlock(return_sequences=True) trained with model.fit."""
    import keras
    import tensorflow as tf

    import tfode
    from tfode.layers import NFE, NFELogger, ODEBlock

    dynamics = spiral_dynamics_layer(args.seed)
    block = ODEBlock(dynamics, t=t[:args.batch_time], return_sequences=True,
                     method=args.method, rtol=args.tol, atol=args.tol, dtype="float64")
    model = keras.Sequential([keras.Input((2,), dtype="float64"), block])
    model.compile(keras.optimizers.RMSprop(args.lr), "mae",
                  metrics=[NFE(block, "forward"), NFE(block, "backward")])
    batches = [get_batch(rng, t, ys, args.batch_time, args.batch_size) for _ in range(args.niters)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([np.transpose(b[2], (1, 0, 2)) for b in batches])  # [N, T, 2]
    logger = NFELogger(block)
    out = Path(args.out)
    epochs = max(1, args.niters // args.test_every)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).repeat()
    hist = model.fit(data, epochs=epochs, steps_per_epoch=args.test_every,
                     callbacks=[logger, keras.callbacks.CSVLogger(str(out / "fit_log.csv"))],
                     verbose=2)
    full = tfode.odeint(dynamics, tf.constant(TRUE_Y0[None]), tf.constant(t), method=args.method,
                        rtol=args.tol, atol=args.tol)[:, 0].numpy()
    history = [{"iteration": (e + 1) * args.test_every, "train_loss": hist.history["loss"][e],
                "nfe_forward": logger.epochs[e]["nfe_forward"],
                "nfe_backward": logger.epochs[e]["nfe_backward"]} for e in range(epochs)]
    history[-1]["test_loss"] = float(np.mean(np.abs(full - ys)))
    return full, history


def plot(path: Path, t, ys, pred, history):
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(t, ys[:, 0], "g-", label="true x")
    axes[0].plot(t, ys[:, 1], "b-", label="true y")
    axes[0].plot(t, pred[:, 0], "g--", label="learned x")
    axes[0].plot(t, pred[:, 1], "b--", label="learned y")
    axes[0].set(title="Trajectories", xlabel="t")
    axes[0].legend(fontsize=8)
    axes[1].plot(ys[:, 0], ys[:, 1], "g-", label="true")
    axes[1].plot(pred[:, 0], pred[:, 1], "b--", label="learned")
    axes[1].set(title="Phase portrait", xlabel="x", ylabel="y")
    axes[1].legend(fontsize=8)
    its = [h["iteration"] for h in history]
    axes[2].plot(its, [h["nfe_forward"] for h in history], "o-", label="NFE-F")
    axes[2].plot(its, [h["nfe_backward"] for h in history], "s-", label="NFE-B")
    axes[2].set(title="Function evaluations per training step", xlabel="iteration")
    axes[2].legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--niters", type=int, default=2000, help="training iterations")
    parser.add_argument("--method", default="adams", help="tfode method (adams is the paper's)")
    parser.add_argument("--tol", type=float, default=1e-6, help="rtol = atol, forward and adjoint")
    parser.add_argument("--batch-time", type=int, default=10, help="steps per sub-trajectory")
    parser.add_argument("--batch-size", type=int, default=20, help="sub-trajectories per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="RMSprop learning rate")
    parser.add_argument("--test-every", type=int, default=100, help="evaluate every N iterations")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default="results/ode_demo", help="output folder")
    parser.add_argument("--keras", action="store_true",
                        help="train with ODEBlock and model.fit instead of a GradientTape loop")
    args = parser.parse_args(argv)
    if args.keras and args.out == parser.get_default("out"):
        args.out = "results/ode_demo_keras"

    import keras
    import tensorflow as tf

    import tfode

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t, ys = true_trajectory()
    rng = np.random.default_rng(args.seed)
    model = build_model(args.seed)
    func = lambda s, y: model(y ** 3)  # noqa: E731
    optimizer = keras.optimizers.RMSprop(args.lr)
    stats = tfode.SolveStats()
    solve = dict(method=args.method, rtol=args.tol, atol=args.tol, stats=stats)
    t_full, y0_full = tf.constant(t), tf.constant(TRUE_Y0[None])

    history, start = [], time.perf_counter()
    if args.keras:
        full, history = train_keras(args, t, ys, rng)
        return _finish(args, out, t, ys, full, history, start)
    progbar = keras.utils.Progbar(args.niters, stateful_metrics=["loss", "nfe_f", "nfe_b"])
    for it in range(1, args.niters + 1):
        y0, bt, by = get_batch(rng, t, ys, args.batch_time, args.batch_size)
        with tf.GradientTape() as tape:
            pred = tfode.odeint(func, tf.constant(y0), tf.constant(bt), **solve)
            loss = tf.reduce_mean(tf.abs(pred - by))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        nfe_f, nfe_b = int(stats.nfe_forward.numpy()), int(stats.nfe_backward.numpy())
        progbar.update(it, [("loss", float(loss)), ("nfe_f", nfe_f), ("nfe_b", nfe_b)])
        if it % args.test_every == 0 or it == args.niters:
            full = tfode.odeint(func, y0_full, t_full, method=args.method, rtol=args.tol,
                                atol=args.tol)[:, 0].numpy()
            history.append({"iteration": it, "train_loss": float(loss),
                            "test_loss": float(np.mean(np.abs(full - ys))),
                            "nfe_forward": nfe_f, "nfe_backward": nfe_b,
                            "elapsed_s": time.perf_counter() - start})
    return _finish(args, out, t, ys, full, history, start)


def _finish(args, out: Path, t, ys, full, history, start):
    """Writes the log, the figure and the results JSON; prints the summary."""
    with open(out / "log.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=sorted({k for h in history for k in h}))
        writer.writeheader()
        writer.writerows(history)
    plot(out / "trajectories.png", t, ys, full, history)
    result = {"experiment": "ode_demo_keras" if args.keras else "ode_demo", "args": vars(args),
              "machine": machine(),
              "final_test_loss": history[-1]["test_loss"],
              "constant_prediction_test_loss": float(np.mean(np.abs(ys - TRUE_Y0))),
              "history": history, "wall_s": time.perf_counter() - start}
    write_json(out / "results.json", result)
    print(f"\nfinal test loss {result['final_test_loss']:.4f}; NFE-F {history[-1]['nfe_forward']}, "
          f"NFE-B {history[-1]['nfe_backward']}; wrote {out}/results.json, log.csv, "
          "trajectories.png")
    return result


if __name__ == "__main__":
    main()
