"""Continuous normalizing flows, Section 4 of the paper.

1. Density matching (Figure 4): minimise KL(q || p) = E_q[log q(x) + U(x)] + const for
   three of Rezende and Mohamed's 2-D test energies (U1, U2, U3 stand for the
   figure's rows 1, 2, 3; ``U2c``, ``U3c`` are U2 and U3 confined to the window they
   are drawn in, which makes them normalisable), with a planar CNF of M hidden units
   (gated, parameters from a hypernetwork of t) against a planar normalizing flow of K layers, for
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
#: U2 and U3 with a steep wall outside the window they are drawn in (normalisable, so
#: their loss is a KL divergence too): ``--targets U2c,U3c``.
CONFINED = ("U2c", "U3c")
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


def _components(name: str, n_curve: int = 720):
    """The curves of a dataset's two components in the raw coordinates of its
    generator, and the affine map ``x = (raw - shift) * scale`` to the data."""
    if name == "circles":
        a = np.linspace(0, 2 * np.pi, n_curve, endpoint=False)
        ring = np.stack([np.cos(a), np.sin(a)], 1)
        return [ring, 0.5 * ring], np.zeros(2), np.ones(2)
    a = (np.arange(n_curve) + 0.5) / n_curve * np.pi  # midpoint rule on [0, pi]
    upper = np.stack([np.cos(a), np.sin(a)], 1)
    lower = np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1)
    return [upper, lower], np.array([0.5, 0.25]), np.array([0.8, 1.6])


def true_component_densities(name: str, x: np.ndarray, noise: float = 0.06) -> np.ndarray:
    """The exact densities ``[N, 2]`` at ``x`` (``[N, 2]``) of the two halves of
    ``DATASETS[name]``, each weighted by its half of the mass: a component is uniform
    along its curve and blurred by isotropic Gaussian noise of std ``noise`` (in the
    generator's coordinates), integrated over the curve by quadrature."""
    curves, shift, scale = _components(name)
    raw = np.asarray(x, np.float64) / scale + shift
    out = []
    for curve in curves:
        d2 = ((raw[:, None, :] - curve[None]) ** 2).sum(-1)
        out.append(0.5 * np.exp(-d2 / (2 * noise ** 2)).mean(1) / (2 * np.pi * noise ** 2))
    return np.stack(out, 1) / np.prod(scale)


def radial_profile(log_prob, radii: np.ndarray, n_angles: int = 48) -> np.ndarray:
    """``p_R(r) = r * integral of p(r cos a, r sin a) da`` on ``radii``, from a log
    density ``log_prob(points [N, 2]) -> [N]``: the density of the distance to the
    origin, which has a peak at each ring of two circles."""
    a = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    pts = np.stack([np.outer(radii, np.cos(a)).ravel(), np.outer(radii, np.sin(a)).ravel()], 1)
    p = np.exp(np.asarray(log_prob(pts))).reshape(len(radii), n_angles)
    return 2 * np.pi * radii * p.mean(1)


def profile_peaks(radii: np.ndarray, profile: np.ndarray) -> dict:
    """The two highest local maxima of a radial profile (sorted by radius) and the
    depth of the trough between them (its minimum over the lower peak; 1: no trough)."""
    inner = np.flatnonzero((profile[1:-1] > profile[:-2]) & (profile[1:-1] >= profile[2:])) + 1
    top = sorted(inner[np.argsort(profile[inner])[-2:]])
    if len(top) < 2:
        return {"peaks": [float(radii[i]) for i in top], "trough_ratio": 1.0}
    trough = profile[top[0]:top[1] + 1].min()
    return {"peaks": [float(radii[i]) for i in top],
            "trough_ratio": float(trough / min(profile[top[0]], profile[top[1]]))}


def measure_fit(name: str, samples: np.ndarray, reference: np.ndarray) -> dict:
    """Which parts of the data a model's ``samples`` cover: the share of samples each
    component explains best (the truth: one half each) and the share that falls where
    the true density is below its 1st percentile over ``reference`` data samples (the
    truth: 1%)."""
    comp = true_component_densities(name, samples)
    floor = np.percentile(np.log(true_component_densities(name, reference).sum(1)), 1)
    off = np.log(comp.sum(1) + 1e-300) < floor
    shares = [float(np.mean(~off & (comp.argmax(1) == k))) for k in range(2)]
    return {"component_shares": shares, "off_support": float(off.mean()),
            "both_components": bool(min(shares) >= 0.25)}


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
    log_z = {target: log_partition(target) for target in args.targets}
    for target in args.targets:
        for size in args.sizes:
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

                def loss_fn(z, model=model, target=target):
                    x, log_q = model.sample(args.batch, z=z)
                    return tf.reduce_mean(log_q + energy(target, x))

                # The NF at the CNF's wall time: as many iterations as fit in it.
                limit = (rows[-1]["train_s"] if kind == "nf" and args.nf_budget == "cnf-time"
                         else None)
                history = fit(loss_fn, model.trainable_variables, opt, iters,
                              f"density {target} {kind} K=M={size}",
                              data=_base_draw(args.seed, args.batch),
                              log_every=max(1, iters // 20),
                              checkpoint=out / f"checkpoint_density_{target}_{kind}{size}.npz",
                              checkpoint_every=max(25, iters // 200), resume=args.resume,
                              time_limit=limit, history_every=max(1, iters // 10000))
                iters = history[-1]["iteration"] if history else 0
                z = _base_draw(args.seed + 1, args.eval_samples)(0)
                x, log_q = model.sample(len(z), z=tf.constant(z))
                terms = (log_q + energy(target, x)).numpy()
                kl = float(terms.mean())
                rows.append({"target": target, "model": kind, "size": size, "iterations": iters,
                             "kl_loss": kl,
                             "kl_se": float(terms.std(ddof=1) / math.sqrt(len(terms))),
                             "kl_nats": None if log_z[target] is None else kl + log_z[target],
                             "outside_window": float(np.mean(np.abs(x.numpy()).max(1) > WINDOW)),
                             "train_s": history[-1]["wall_s"] if history else 0.0})
                samples[(target, kind, size)] = x.numpy()
    return rows, samples


# The window the targets are drawn in (Rezende and Mohamed's, and the paper's figure).
WINDOW = 4.0


def log_partition(target: str, half_widths=(8.0, 16.0), points: int = 2001) -> float | None:
    """log Z = log of the integral of exp(-U) over the plane, by the midpoint rule on
    square grids of two half-widths; None when the two differ (by more than 1e-6), that
    is when exp(-U) is not integrable: U2 and U3 do not grow along z1, so Z is infinite
    and E_q[log q + U] has no lower bound (a flow lowers it by spreading along z1).

    With a finite log Z the density-matching loss plus log Z is KL(q || p) in nats."""
    import tensorflow as tf

    from tfode.flows import energy

    values = []
    for half in half_widths:
        g = np.linspace(-half, half, points)
        grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        neg = -energy(target, tf.constant(grid)).numpy()
        top = neg.max()
        values.append(float(top + np.log(np.exp(neg - top).sum() * (g[1] - g[0]) ** 2)))
    return values[-1] if abs(values[1] - values[0]) <= 1e-6 else None


def density_claims(rows: list[dict]) -> list[dict]:
    """The paper's claim, "the CNF generally achieves lower loss", checked at every
    target and K = M: the two models' KL estimates, their difference and its standard
    error (independent samples), and the verdict: a model is lower only when the
    difference exceeds twice its standard error, else a tie. Beside it, whether the
    target is normalisable (else the loss has no floor and the lower one may only have
    spread further along z1) and each model's share of samples outside the window the
    targets are drawn in, |z| <= 4 in both coordinates."""
    by = {(r["target"], r["model"], r["size"]): r for r in rows}
    claims = []
    for (target, model, size), cnf in by.items():
        nf = by.get((target, "nf", size))
        if model != "cnf" or nf is None:
            continue
        diff = cnf["kl_loss"] - nf["kl_loss"]
        se = math.hypot(cnf.get("kl_se", 0.0), nf.get("kl_se", 0.0))
        verdict = "tie" if abs(diff) <= 2 * se else ("CNF lower" if diff < 0 else "NF lower")
        claims.append({"target": target, "size": size, "cnf_kl": cnf["kl_loss"],
                       "nf_kl": nf["kl_loss"], "cnf_minus_nf": diff, "se": se,
                       "verdict": verdict, "normalisable": cnf.get("kl_nats") is not None,
                       "cnf_outside": cnf.get("outside_window"),
                       "nf_outside": nf.get("outside_window"), "cnf_iterations": cnf["iterations"],
                       "nf_iterations": nf["iterations"], "train_s": cnf["train_s"]})
    return claims


def plot_density_matching(rows, samples, out: Path) -> Path:
    import tensorflow as tf
    plt = pyplot()

    from tfode.flows import energy

    g = np.linspace(-4, 4, 200)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    targets = list(dict.fromkeys(x["target"] for x in rows))
    sizes = sorted({x["size"] for x in rows})
    fig, ax = plt.subplots(len(targets), 4, figsize=(14, 3.4 * len(targets)), squeeze=False)
    big = max(sizes)
    for r, target in enumerate(targets):
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
        ax[r, 3].set_xticks(sizes, [str(k) for k in sizes])
        ax[r, 3].minorticks_off()
        ax[r, 3].legend()
    return save_figure(fig, out / "density_matching.png", dpi=90)


def _base_draw(seed: int, n: int, scale: float = 1.0):
    """``data(i)`` for :func:`fit`: iteration ``i``'s base samples, from ``(seed, i)``
    alone (so that a resumed run is bitwise the uninterrupted one)."""
    return lambda i: scale * np.random.default_rng([seed, i]).normal(size=(n, 2))


def maximum_likelihood(args, out: Path) -> list[dict]:
    """CNF (64 units) against planar NF (64 one-unit layers) by maximum likelihood; the
    NF's likelihood goes through its layer-by-layer Newton inverse. Each model's test
    NLL is reported beside the exact NLL of the data distribution and that of a
    Gaussian kernel density estimate of it, with the share of its samples on each
    component and, on two circles, its radial profile's peaks."""
    import keras
    import tensorflow as tf
    from scipy.stats import gaussian_kde
    pyplot()  # the Agg backend before Keras or TF import matplotlib

    rows = []
    for name in args.datasets:
        gen = DATASETS[name]
        test = gen(args.eval_samples, np.random.default_rng([args.seed, 1, 0]))
        reference = gen(20_000, np.random.default_rng([args.seed, 1, 1]))
        truth = {"true_nll": float(-np.mean(np.log(true_component_densities(name, test)
                                                      .sum(1)))),
                 "kde_nll": float(-np.mean(np.log(gaussian_kde(reference.T)(test.T))))}
        keras.utils.set_random_seed(args.seed)
        # The reference example: base N(0, 0.1 I), data at t = 10, Adam 1e-3, 512 fresh
        # samples per step.
        models = {"cnf": (build_cnf(64, args, t1=10.0, base_scale=math.sqrt(0.1)),
                          keras.optimizers.Adam(args.cnf_lr), args.ml_iters),
                  "nf": (build_nf(64), keras.optimizers.Adam(args.nf_ml_lr), args.nf_ml_iters)}
        radii = np.linspace(0.02, 1.6, 80)
        profiles = {"truth": radial_profile(
            lambda x, name=name: np.log(true_component_densities(name, x).sum(1)), radii)}
        for kind, (model, opt, iters) in models.items():
            def loss_fn(batch, model=model):
                return -tf.reduce_mean(model.log_prob(batch))

            def draw(i, gen=gen):
                return gen(args.ml_batch, np.random.default_rng([args.seed, 0, i]))

            label = f"likelihood {name} {kind}"
            history = fit(loss_fn, model.trainable_variables, opt, iters, label, data=draw,
                          log_every=max(1, iters // 20),
                          checkpoint=out / f"checkpoint_ml_{name}_{kind}.npz",
                          checkpoint_every=max(25, iters // 200), resume=args.resume)
            z = _base_draw(args.seed + 1, 4000, math.sqrt(0.1) if kind == "cnf" else 1.0)(0)
            samples = model.sample(len(z), z=tf.constant(z))[0].numpy()
            row = {"dataset": name, "model": kind, "iterations": iters,
                   "test_nll": float(-tf.reduce_mean(model.log_prob(tf.constant(test)))),
                   **truth, **measure_fit(name, samples, reference),
                   "train_s": history[-1]["wall_s"] if history else 0.0}
            if name == "circles":
                profiles[kind] = radial_profile(
                    lambda x, model=model: model.log_prob(tf.constant(x)).numpy(), radii)
                want = profile_peaks(radii, profiles["truth"])["peaks"]
                got = profile_peaks(radii, profiles[kind])
                row.update(ring_peaks=got["peaks"], true_ring_peaks=want,
                           trough_ratio=got["trough_ratio"],
                           rings_found=bool(len(got["peaks"]) == 2 and got["trough_ratio"] < 0.5
                                            and np.allclose(got["peaks"], want, atol=0.1)))
            rows.append(row)
        cnf, nf = models["cnf"][0], models["nf"][0]
        plot_likelihood(name, reference[:4000], cnf, nf, out / f"likelihood_{name}.png",
                        profiles=(radii, profiles) if name == "circles" else None)
    return rows


def plot_likelihood(name, data, cnf, nf, path: Path, profiles=None) -> None:
    """Data, learned densities, and samples at 5..100% of the flow (Figure 6); with
    ``profiles`` (``(radii, {"truth" | "cnf" | "nf": p_R})``) a last column with each
    model's radial profile against the truth's."""
    import tensorflow as tf
    plt = pyplot()

    n = len(SNAPSHOTS)
    cols = n + 2 + (profiles is not None)
    fig, ax = plt.subplots(2, cols, figsize=(2.6 * cols, 5.4))
    lim = [[-2, 2], [-2, 2]]
    g = np.linspace(-2, 2, 80)
    grid = tf.constant(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    z0 = tf.constant(np.random.default_rng(7).normal(size=(2000, 2)))
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
        if profiles is not None:
            radii, p = profiles
            ax[row, -1].plot(radii, p["truth"], color="0.5", ls="--", label="truth")
            ax[row, -1].plot(radii, p[label.lower()], color="tab:red", label=label)
            ax[row, -1].set(xlabel="radius r", ylabel="$p_R(r)$", title="radial density")
            ax[row, -1].legend(fontsize=7)
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
    parser.add_argument("--nf-budget", choices=("iterations", "cnf-time"),
                        default="iterations",
                        help="density matching: the NF trains --nf-iters iterations, or "
                             "(cnf-time) for the wall time its CNF of the same size took, "
                             "--nf-iters at most")
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
    parser.add_argument("--targets", type=lambda v: [d for d in v.split(",") if d],
                        default=list(TARGETS),
                        help="density-matching targets, comma separated (also U2c, U3c: "
                             "U2 and U3 confined to the window |z1| <= 4)")
    parser.add_argument("--sizes", type=lambda v: [int(d) for d in v.split(",") if d],
                        default=list(SIZES), help="density matching: K = M values")
    parser.add_argument("--datasets", type=lambda v: [d for d in v.split(",") if d],
                        default=list(DATASETS), help="likelihood datasets, comma separated "
                                                     "(circles, moons)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each model from its checkpoint in OUT")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default="results/cnf", help="output folder")
    args = parser.parse_args(argv)
    for given, known, what in ((args.datasets, DATASETS, "dataset"),
                               (args.targets, TARGETS + CONFINED, "target")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {what}(s) {unknown}; choose from {sorted(known)}")
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
                     ["target", "model", "size", "iterations", "kl_loss", "kl_se", "kl_nats",
                      "outside_window", "train_s"])
        summary["density_claims"] = density_claims(rows)
        write_table(out / "density_claims", summary["density_claims"],
                    ["target", "size", "cnf_kl", "nf_kl", "cnf_minus_nf", "se", "verdict",
                     "normalisable", "cnf_outside", "nf_outside", "cnf_iterations",
                     "nf_iterations", "train_s"])
        summary["density_figure"] = str(plot_density_matching(rows, samples, out))
    if "ml" not in args.skip:
        rows = maximum_likelihood(args, out)
        summary["maximum_likelihood"] = rows
        write_table(out / "likelihood", rows,
                     ["dataset", "model", "iterations", "test_nll", "true_nll", "kde_nll",
                      "component_shares", "off_support", "ring_peaks", "trough_ratio",
                      "rings_found", "train_s"])
    return finish(out, summary, start)


if __name__ == "__main__":
    main()
