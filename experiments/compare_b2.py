"""B2 and Figure 3c of the comparison: one training step of the MNIST ODE block on each
side (random or trained weights) and its NFE-backward against NFE-forward. Run through
``python -m experiments.compare --parts b2,fig3c``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from experiments._common import (
    eval_bound_s,
    eval_cost_rows,
    pyplot,
    save_figure,
)


# -- B2 and Figure 3c ------------------------------------------------------------------------
class B2:
    """The MNIST ODE block on fixed random feature maps, the same weights on both sides."""

    def __init__(self, batch: int = 128, channels: int = 64, size: int = 7, seed: int = 0):
        import keras

        from tfode.layers import ConvODEFunc

        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(batch, size, size, channels)).astype(np.float32)
        self.w = (rng.normal(size=self.x.shape) / np.sqrt(self.x.size)).astype(np.float32)
        self.func = ConvODEFunc(channels)
        self.func.build((None, size, size, channels))
        self.channels = channels
        self.weights = "random (Keras initialisers, seed 0); feature maps N(0, 1)"

    def load_trained(self, path: str | Path, source: str = "auto") -> None:
        """Takes the ODE function of a saved MNIST ODE-Net (``experiments.mnist``) and,
        as the block's input, its downsampling of the first ``batch`` MNIST test images
        (from ``source``, as :func:`experiments.mnist_data.load_mnist`)."""
        import keras

        import tfode.layers  # noqa: F401  (registers the layers for loading)
        from experiments.mnist_data import load_mnist
        from experiments.mnist_models import ode_block

        model = keras.saving.load_model(path)
        block = ode_block(model)
        if block is None:
            raise ValueError(f"{path} holds no ODEBlock; pass a model saved by "
                             "experiments.mnist (odenet.keras).")
        data = load_mnist(source, log=lambda *a, **k: None)
        images = data.x_test[: self.x.shape[0]]
        self.x = keras.Model(model.inputs, block.input)(images).numpy().astype(np.float32)
        for src, dst in zip(block.dynamics.weights, self.func.weights, strict=True):
            dst.assign(src)
        self.weights = f"trained ({path}; MNIST {data.source} test images)"

    def eval_costs(self, repeats: int = 10) -> list[dict]:
        """Per-call costs of an evaluation and a VJP on each side
        (:func:`experiments._common.eval_cost_rows`)."""
        import tensorflow as tf
        import torch

        import tfode
        from experiments import torch_models as tm

        def dynamics(t, y):
            return self.func(t, y)

        cb = tfode.numpy_callbacks(dynamics, self.x.shape, tf.float32, method="adams")
        y, a = self.x.astype(np.float64).ravel(), self.w.astype(np.float64).ravel()
        func = tm.keras_to_torch(self.func, tm.ConvODEFunc(self.channels))
        return eval_cost_rows(cb, y, a, func,
                              torch.tensor(self.x.transpose(0, 3, 1, 2).copy()),
                              torch.tensor(self.w.transpose(0, 3, 1, 2).copy()),
                              torch.tensor(0.0), repeats)

    def tfode(self, method: str = "adams", t_end: float = 1.0, lr: float = 0.0):
        import keras
        import tensorflow as tf

        from tfode.layers import ODEBlock

        block = ODEBlock(self.func, t=(0.0, t_end), method=method, rtol=1e-3, atol=1e-3)
        x, w = tf.constant(self.x), tf.constant(self.w)
        opt = keras.optimizers.SGD(lr)

        def step(tol):
            block.rtol = block.atol = tol
            start = time.perf_counter()
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(block(x) * w)
            grads = tape.gradient(loss, block.trainable_variables)
            opt.apply_gradients(zip(grads, block.trainable_variables))
            return {"step_s": time.perf_counter() - start,
                    "nfe_forward": int(block.stats.nfe_forward.numpy()),
                    "nfe_backward": int(block.stats.nfe_backward.numpy())}

        return step

    def torch(self, adjoint: bool = True, t_end: float = 1.0, lr: float = 0.0):
        import torch
        import torchdiffeq

        from experiments import torch_models as tm

        func = tm.Counted(tm.keras_to_torch(self.func, tm.ConvODEFunc(self.channels)))
        solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
        x = torch.tensor(self.x.transpose(0, 3, 1, 2).copy())
        w = torch.tensor(self.w.transpose(0, 3, 1, 2).copy())
        t = torch.tensor([0.0, t_end])
        opt = torch.optim.SGD(func.parameters(), lr=lr)

        def step(tol):
            func.nfe = 0
            start = time.perf_counter()
            opt.zero_grad()
            out = solve(func, x, t, rtol=tol, atol=tol, method="dopri5")[-1]
            nfe_f = func.nfe
            (out * w).sum().backward()
            opt.step()
            return {"step_s": time.perf_counter() - start, "nfe_forward": nfe_f,
                    "nfe_backward": func.nfe - nfe_f if adjoint else None}

        return step


def b2(args) -> tuple[list[dict], list[dict], str]:
    """B2 step times, the per-evaluation costs, and which weights were used.

    Each step row also gets ``eval_bound_s``: its evaluations priced at the measured
    per-evaluation costs (forward NFE x f, backward NFE x VJP), the time the step
    would take if the solver and the framework cost nothing else.
    """
    problem = B2(batch=args.b2_batch)
    if args.b2_weights:
        problem.load_trained(args.b2_weights)
    sides = {"tfode adams (adjoint)": problem.tfode("adams"),
             "tfode dopri5 (adjoint)": problem.tfode("dopri5"),
             "torchdiffeq dopri5, odeint_adjoint": problem.torch(adjoint=True),
             "torchdiffeq dopri5, odeint (backprop)": problem.torch(adjoint=False)}
    rows = []
    for label, step in sides.items():
        step(1e-3)  # warm-up (traces, allocates)
        runs = [step(1e-3) for _ in range(args.repeats)]
        rows.append({"implementation": label, "tol": 1e-3,
                     "step_s": float(np.median([r["step_s"] for r in runs])),
                     "nfe_forward": runs[-1]["nfe_forward"],
                     "nfe_backward": runs[-1]["nfe_backward"]})
        print(f"  B2 {label}: {rows[-1]['step_s']:.2f} s per step", flush=True)
    costs = problem.eval_costs()
    for c in costs:
        print(f"  B2 per evaluation, {c['side']}: f {c['f_ms']:.1f} ms, "
              f"VJP {c['vjp_ms']:.1f} ms", flush=True)
    base = next(r for r in rows if "odeint_adjoint" in r["implementation"])
    for r in rows:
        r["time_vs_torchdiffeq_adjoint"] = r["step_s"] / base["step_s"]
        c = costs[0] if r["implementation"].startswith("tfode") else costs[1]
        r["eval_bound_s"] = eval_bound_s(r, c)
    return rows, costs, problem.weights


def figure3c(args, out: Path) -> tuple[list[dict], Path]:
    """Backward against forward evaluations of the B2 block across tolerances."""
    problem = B2(batch=args.fig_batch)
    sides = {"tfode adams (adjoint)": problem.tfode("adams"),
             "torchdiffeq dopri5 (odeint_adjoint)": problem.torch(adjoint=True)}
    rows = []
    for label, step in sides.items():
        for tol in args.fig_tols:
            r = step(tol)
            rows.append({"implementation": label, "tol": tol, "nfe_forward": r["nfe_forward"],
                         "nfe_backward": r["nfe_backward"],
                         "ratio": r["nfe_backward"] / r["nfe_forward"]})
    return rows, plot_figure3c(rows, out / "figure3c.png")


def plot_figure3c(rows: list[dict], path: Path) -> Path:
    """Figure 3c from its rows: one point per implementation and tolerance, each
    labelled with its tolerance."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    sides = list(dict.fromkeys(r["implementation"] for r in rows))
    for label, marker in zip(sides, "os^v"):
        mine = [r for r in rows if r["implementation"] == label]
        line, = ax.plot([float(r["nfe_forward"]) for r in mine],
                        [float(r["nfe_backward"]) for r in mine], marker + "-", lw=0.8,
                        label=label)
        for r in mine:
            ax.annotate(f"{float(r['tol']):.0e}", (float(r["nfe_forward"]),
                                                   float(r["nfe_backward"])),
                        textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
    top = max(max(float(r["nfe_forward"]), float(r["nfe_backward"])) for r in rows) * 1.1
    ax.plot([0, top], [0, top], color="0.6", lw=0.8, label="NFE-B = NFE-F")
    ax.plot([0, top], [0, top / 2], color="0.6", lw=0.8, ls="--",
            label="NFE-B = NFE-F / 2 (paper)")
    ax.set(xlabel="forward evaluations (NFE-F)", ylabel="backward evaluations (NFE-B)",
           xlim=(0, top), ylim=(0, top))
    ax.set_title("Figure 3c check: the MNIST ODE block\n(each point labelled with its "
                 "tolerance, rtol = atol)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)
