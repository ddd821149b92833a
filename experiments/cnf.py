"""Continuous normalizing flows, Section 4 of the paper.

1. Density matching (Figure 4): minimise KL(q || p) = E_q[log q(x) + U(x)] + const for
   three of Rezende and Mohamed's 2-D test energies (U1, U2, U3 stand for the
   figure's rows 1, 2, 3), with a planar CNF of M hidden units (gated, parameters
   from a hypernetwork of t) against a planar normalizing flow of K layers, for
   K = M in {2, 8, 32}: a loss table and panels of samples and loss against K / M.
2. Maximum likelihood (Figures 5, 6): Two Circles and Two Moons, a CNF with 64 units
   against a planar NF of 64 one-unit layers: test negative log-likelihood, densities
   and snapshots of samples at 5, 20, 40, 60, 80 and 100% of the flow.

The CNF integrates [z, log p] through tfode.odeint at tolerance 1e-5 (the paper's) with
the adjoint; the trace is exact (``--trace hutchinson`` for the stochastic estimate).
Full runs use the paper's iteration counts (CNF 10,000 Adam steps; planar NF 500,000
RMSprop steps); ``--quick`` is a CPU run.

    python -m experiments.cnf --quick
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    finish,
    fit,
    machine,
    pyplot,
    save_figure,
    script_parser,
    write_table,
)

TARGETS = ("U1", "U2", "U3")
SIZES = (2, 8, 32)
SNAPSHOTS = (0.05, 0.2, 0.4, 0.6, 0.8, 1.0)


def two_circles(n: int, rng, noise: float = 0.06, factor: float = 0.5) -> np.ndarray:
    """sklearn's make_circles(noise=0.06, factor=0.5), shuffled."""
    theta = rng.uniform(0, 2 * np.pi, n)
    r = np.where(np.arange(n) < n // 2, 1.0, factor)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    return rng.permutation(x + rng.normal(0, noise, x.shape))


def two_moons(n: int, rng, noise: float = 0.06) -> np.ndarray:
    """sklearn's make_moons(noise), centred and scaled to about unit spread."""
    m = n // 2
    a = rng.uniform(0, np.pi, m)
    b = rng.uniform(0, np.pi, n - m)
    x = np.concatenate([np.stack([np.cos(a), np.sin(a)], 1),
                        np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)])
    x = x + rng.normal(0, noise, x.shape)
    return rng.permutation((x - [0.5, 0.25]) / [1.0, 0.5] * 0.8)


DATASETS = {"circles": two_circles, "moons": two_moons}


def build_cnf(width: int, args, t1: float = 1.0, base_scale: float = 1.0):
    from tfode.flows import CNF, HyperPlanarDynamics

    dyn = HyperPlanarDynamics(2, width, reduce=args.reduce, dtype="float64")
    cnf = CNF(dyn, t0=0.0, t1=t1, trace=args.trace, base_scale=base_scale, method=args.method,
              rtol=args.tol, atol=args.tol, dtype="float64")
    cnf.build((None, 2))
    return cnf


def build_nf(layers: int):
    from tfode.flows import PlanarFlow

    nf = PlanarFlow(layers, 2, dtype="float64")
    nf.build()
    return nf


def density_matching(args, out: Path) -> tuple[list[dict], dict]:
    import keras
    import tensorflow as tf

    from tfode.flows import energy

    rows, samples = [], {}
    for target in TARGETS:
        for size in SIZES:
            for kind in ("cnf", "nf"):
                keras.utils.set_random_seed(args.seed)
                if kind == "cnf":
                    model = build_cnf(size, args)
                    opt = keras.optimizers.Adam(args.cnf_lr)
                    iters = args.cnf_iters
                else:
                    model = build_nf(size)
                    opt = keras.optimizers.RMSprop(args.nf_lr)
                    iters = args.nf_iters

                def loss_fn(_, model=model, target=target):
                    x, log_q = model.sample(args.batch)
                    return tf.reduce_mean(log_q + energy(target, x))

                start = time.perf_counter()
                fit(loss_fn, model.trainable_variables, opt, iters,
                    f"density {target} {kind} K=M={size}", log_every=max(1, iters // 20))
                x, log_q = model.sample(args.eval_samples)
                kl = float(tf.reduce_mean(log_q + energy(target, x)))
                rows.append({"target": target, "model": kind, "size": size, "iterations": iters,
                             "kl_loss": kl, "train_s": time.perf_counter() - start})
                samples[(target, kind, size)] = x.numpy()
    return rows, samples


def plot_density_matching(rows, samples, out: Path) -> Path:
    import tensorflow as tf
    plt = pyplot()

    from tfode.flows import energy

    g = np.linspace(-4, 4, 200)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    fig, ax = plt.subplots(len(TARGETS), 4, figsize=(14, 3.4 * len(TARGETS)))
    big = max(SIZES)
    for r, target in enumerate(TARGETS):
        p = np.exp(-energy(target, tf.constant(grid)).numpy()).reshape(200, 200)
        ax[r, 0].imshow(p, origin="lower", extent=(-4, 4, -4, 4), cmap="inferno")
        ax[r, 0].set_title(f"{target}: target exp(-U)")
        for c, kind in ((1, "nf"), (2, "cnf")):
            x = samples[(target, kind, big)]
            ax[r, c].hist2d(x[:, 0], x[:, 1], bins=100, range=[[-4, 4], [-4, 4]], cmap="inferno")
            ax[r, c].set_title(f"{'planar NF' if kind == 'nf' else 'planar CNF'}, "
                               f"K = M = {big}: samples")
        for kind, style in (("nf", "s--"), ("cnf", "o-")):
            pts = [(x["size"], x["kl_loss"]) for x in rows
                   if x["target"] == target and x["model"] == kind]
            ax[r, 3].plot(*zip(*pts), style, label="NF (K)" if kind == "nf" else "CNF (M)")
        ax[r, 3].set(xscale="log", xlabel="K / M", ylabel="KL(q||p) - log Z",
                     title="loss against K / M")
        ax[r, 3].set_xticks(SIZES, [str(k) for k in SIZES])
        ax[r, 3].minorticks_off()
        ax[r, 3].legend()
    return save_figure(fig, out / "density_matching.png", dpi=90)


def maximum_likelihood(args, out: Path) -> list[dict]:
    """CNF (64 units) against planar NF (64 one-unit layers) by maximum likelihood; the
    NF's likelihood goes through its layer-by-layer Newton inverse."""
    import keras
    import tensorflow as tf
    pyplot()  # the Agg backend before Keras or TF import matplotlib

    rows = []
    for name, gen in DATASETS.items():
        rng = np.random.default_rng(args.seed)
        test = tf.constant(gen(args.eval_samples, rng))
        keras.utils.set_random_seed(args.seed)
        # The reference example: base N(0, 0.1 I), data at t = 10, Adam 1e-3, 512 fresh
        # samples per step.
        models = {"cnf": (build_cnf(64, args, t1=10.0, base_scale=math.sqrt(0.1)),
                          keras.optimizers.Adam(args.cnf_lr), args.ml_iters),
                  "nf": (build_nf(64), keras.optimizers.Adam(args.nf_ml_lr), args.nf_ml_iters)}
        for kind, (model, opt, iters) in models.items():
            def loss_fn(batch, model=model):
                return -tf.reduce_mean(model.log_prob(batch))

            start = time.perf_counter()
            fit(loss_fn, model.trainable_variables, opt, iters, f"likelihood {name} {kind}",
                data=lambda i, gen=gen, rng=rng: gen(args.ml_batch, rng),
                log_every=max(1, iters // 20))
            rows.append({"dataset": name, "model": kind, "iterations": iters,
                         "test_nll": float(-tf.reduce_mean(model.log_prob(test))),
                         "train_s": time.perf_counter() - start})
        cnf, nf = models["cnf"][0], models["nf"][0]
        plot_likelihood(name, gen(4000, rng), cnf, nf, out / f"likelihood_{name}.png")
    return rows


def plot_likelihood(name, data, cnf, nf, path: Path) -> None:
    """Data, learned densities, and samples at 5..100% of the flow (Figures 5 and 6)."""
    import tensorflow as tf
    plt = pyplot()

    n = len(SNAPSHOTS)
    fig, ax = plt.subplots(2, n + 2, figsize=(2.6 * (n + 2), 5.4))
    lim = [[-2, 2], [-2, 2]]
    g = np.linspace(-2, 2, 80)
    grid = tf.constant(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    z0 = tf.random.normal((2000, 2), dtype=tf.float64)
    zs, _ = cnf.integrate(z0 * math.sqrt(0.1), cnf.t0, cnf.t1,
                          times=[cnf.t0] + [cnf.t0 + f * (cnf.t1 - cnf.t0) for f in SNAPSHOTS])
    u = nf.constrained_u()
    for row, (label, model) in enumerate((("CNF", cnf), ("NF", nf))):
        *_, image = ax[row, 0].hist2d(data[:, 0], data[:, 1], bins=80, range=lim,
                                      cmap="inferno")
        fig.colorbar(image, ax=ax[row, 0], label="samples per bin")
        ax[row, 0].set_title(f"{name}: data")
        dens = np.exp(model.log_prob(grid).numpy()).reshape(80, 80)
        image = ax[row, 1].imshow(dens, origin="lower", extent=(-2, 2, -2, 2), cmap="inferno")
        fig.colorbar(image, ax=ax[row, 1], label="density p(x)")
        ax[row, 1].set_title(f"{label} density")
        for a in ax[row]:
            a.set(xlabel="$x_1$", ylabel="$x_2$")
        for i, f in enumerate(SNAPSHOTS):
            if label == "CNF":
                x = zs[i + 1].numpy()
            else:  # the NF after the first f * K layers
                x, k = z0.numpy(), max(1, round(f * nf.k))
                for j in range(k):
                    x = x + np.tanh(x @ nf.w[j].numpy() + nf.b[j].numpy())[:, None] * u[j].numpy()
            ax[row, i + 2].scatter(x[:, 0], x[:, 1], s=1)
            ax[row, i + 2].set(xlim=(-2, 2), ylim=(-2, 2), title=f"{label} {int(f * 100)}%")
    save_figure(fig, path, dpi=80)


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="CPU run: 300 CNF / 3,000 NF density steps, 300 / 1,000 likelihood")
    parser.add_argument("--cnf-iters", type=int, default=10_000, help="CNF density-matching steps")
    parser.add_argument("--nf-iters", type=int, default=500_000, help="NF density-matching steps")
    parser.add_argument("--ml-iters", type=int, default=10_000, help="CNF likelihood steps")
    parser.add_argument("--nf-ml-iters", type=int, default=10_000, help="NF likelihood steps")
    parser.add_argument("--cnf-lr", type=float, default=1e-3, help="CNF Adam learning rate")
    parser.add_argument("--nf-lr", type=float, default=1e-3, help="NF RMSprop learning rate")
    parser.add_argument("--nf-ml-lr", type=float, default=1e-3, help="NF likelihood Adam lr")
    parser.add_argument("--batch", type=int, default=256, help="density-matching samples/step")
    parser.add_argument("--ml-batch", type=int, default=512, help="likelihood samples/step")
    parser.add_argument("--eval-samples", type=int, default=4000, help="evaluation samples")
    parser.add_argument("--method", default="dopri5", help="CNF solver")
    parser.add_argument("--tol", type=float, default=1e-5, help="CNF rtol = atol (the paper's)")
    parser.add_argument("--trace", default="exact", choices=["exact", "hutchinson"])
    parser.add_argument("--reduce", default="sum", choices=["sum", "mean"],
                        help="planar CNF: sum over units (paper) or mean (reference code)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: density,ml")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default="results/cnf", help="output folder")
    args = parser.parse_args(argv)
    if args.quick:
        defaults = {"cnf_iters": 300, "nf_iters": 3000, "ml_iters": 300, "nf_ml_iters": 1000}
        for key, value in defaults.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
        if args.eval_samples == parser.get_default("eval_samples"):
            args.eval_samples = 2000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = {"experiment": "cnf", "args": vars(args), "machine": machine()}
    if "density" not in args.skip:
        rows, samples = density_matching(args, out)
        summary["density_matching"] = rows
        write_table(out / "density_matching", rows,
                     ["target", "model", "size", "iterations", "kl_loss", "train_s"])
        summary["density_figure"] = str(plot_density_matching(rows, samples, out))
    if "ml" not in args.skip:
        rows = maximum_likelihood(args, out)
        summary["maximum_likelihood"] = rows
        write_table(out / "likelihood", rows,
                     ["dataset", "model", "iterations", "test_nll", "train_s"])
    return finish(out, summary, start)


if __name__ == "__main__":
    main()
