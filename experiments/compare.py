"""tfode beside torchdiffeq and autograd's odeint: the same dynamics, the same weights.

Needs the optional ``compare`` extra (torch, torchdiffeq). Benchmarks of
B1-B3 and Figure 3c, every side measured in this run on this machine, with
TensorFlow and PyTorch pinned to one thread each (and NumPy's BLAS to one):

* B1, spiral MLP (batch 1000, 10 output times on [0, 25], loss sum of y^2, float64):
  - agreement at tight tolerance: the maximum relative difference (max |a - b| /
    max |b|) of the values and of the gradients with respect to the initial state,
    the parameters and the output times, against a NumPy DOP853 reference at 1e-12;
  - cost at 1e-3 and 1e-6: forward and backward time (median of repeats), forward
    and backward evaluations, gradient error against the reference, and the ratio of
    each total time to torchdiffeq's ``odeint_adjoint``.
* B2, the MNIST ODE function (64 channels, 7 x 7, batch 128, float32, tolerance 1e-3):
  one training step of the ODE block (forward, adjoint backward, an SGD update of
  learning rate 0 so that every repeat sees the same weights) with the
  weights transferred from Keras to PyTorch; random weights, or with
  ``--b2-weights`` those of a trained MNIST ODE-Net. Beside it, the cost of one
  dynamics evaluation and one VJP on each side, and each step's evaluations
  priced at those costs (the time left if the solvers cost nothing else).
* B3, memory against integration length T (the MNIST ODE function, batch 32): the
  peak resident memory during one gradient computation on [0, T] (and its growth
  over the level before it), each in a fresh process after a warm-up gradient on
  [0, 1], for tfode's adjoint and torchdiffeq's ``odeint`` and ``odeint_adjoint``.
* Figure 3c: backward against forward evaluations of the B2 block at several
  tolerances, tfode's Adams adjoint against torchdiffeq's dopri5 adjoint (the paper
  saw backward about half of forward with Adams).

    python -m experiments.compare --quick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    finish,
    machine,
    save_figure,
    script_parser,
    single_thread_tf,
    write_table,
)

B1_TIMES = np.linspace(0.0, 25.0, 10)


def _threads() -> None:
    import torch

    single_thread_tf()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _norm_rel(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- B1 ----------------------------------------------------------------------------------
class B1:
    """The B1 problem with the same weights in every implementation."""

    def __init__(self, y0_dist: str = "uniform", batch: int = 1000):
        from experiments.bench_bridge import SpiralMLP
        from experiments.ode_demo import build_model

        self.mlp = SpiralMLP(batch=batch, y0_dist=y0_dist)
        self.keras = build_model(seed=0)
        w1, b1, w2, b2 = self.mlp.params()
        for layer, (w, b) in zip(self.keras.layers, ((w1, b1), (w2, b2))):
            layer.kernel.assign(w)
            layer.bias.assign(b)

    def reference(self, tol: float = 1e-12) -> dict:
        """NumPy dynamics and VJP, DOP853 forward and adjoint."""
        import solvers_bridge as sb

        m = self.mlp
        ys, _ = sb.solve(m.fun, m.y0.ravel(), B1_TIMES, "dop853", tol, tol)
        res = sb.adjoint(m.vjp, B1_TIMES, ys, 2.0 * ys, m.n_params, method="dop853",
                         rtol=tol, atol=tol, fun=m.fun)
        return {"ys": ys.reshape(len(B1_TIMES), *m.shape), "y0": res.grad_y0.reshape(m.shape),
                "params": res.grad_params, "t": res.grad_t}

    def tfode(self, method: str, tighter_adjoint: float = 1.0):
        """tfode's adjoint; ``tighter_adjoint > 1`` divides the backward tolerances by it
        and takes the gradient integrals out of error control (seminorm)."""
        import tensorflow as tf

        import tfode

        model, stats = self.keras, tfode.SolveStats()
        y0, t = tf.constant(self.mlp.y0), tf.constant(B1_TIMES)
        options = {"lband": 1, "uband": 1} if method in ("lsoda", "bdf") else None

        def func(s, y):
            return model(y ** 3)

        def adjoint_kw(tol):
            if tighter_adjoint == 1.0:
                return {}
            return {"adjoint": tfode.Backsolve(rtol=tol / tighter_adjoint,
                                               atol=tol / tighter_adjoint, seminorm=True)}

        def run(tol):
            start = time.perf_counter()
            with tf.GradientTape() as tape:
                tape.watch([y0, t])
                ys = tfode.odeint(func, y0, t, method=method, rtol=tol, atol=tol,
                                  stats=stats, options=options, **adjoint_kw(tol))
                loss = tf.reduce_sum(ys ** 2)
            mid = time.perf_counter()
            g_y0, g_t, *g_p = tape.gradient(loss, [y0, t, *model.trainable_variables])
            end = time.perf_counter()
            return {"ys": ys.numpy(), "y0": g_y0.numpy(), "t": g_t.numpy(),
                    "params": np.concatenate([g.numpy().ravel() for g in g_p]),
                    "forward_s": mid - start, "backward_s": end - mid,
                    "nfe_forward": int(stats.nfe_forward.numpy()),
                    "nfe_backward": int(stats.nfe_backward.numpy())}

        run(1e-3)  # traces the callbacks
        return run

    def torch(self, adjoint: bool, method: str = "dopri5"):
        import torch
        import torchdiffeq

        from experiments import torch_models as tm

        func = tm.Counted(tm.keras_to_torch(self.keras, tm.SpiralMLP().double()))
        solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
        params = list(func.func.net.parameters())  # w1, b1, w2, b2 as [out, in]

        def run(tol):
            y0 = torch.tensor(self.mlp.y0, requires_grad=True)
            t = torch.tensor(B1_TIMES, requires_grad=True)
            func.nfe = 0
            start = time.perf_counter()
            ys = solve(func, y0, t, rtol=tol, atol=tol, method=method)
            loss = (ys ** 2).sum()
            mid = time.perf_counter()
            nfe_f = func.nfe
            loss.backward()
            end = time.perf_counter()
            flat = [params[0].grad.T, params[1].grad, params[2].grad.T, params[3].grad]
            out = {"ys": ys.detach().numpy(), "y0": y0.grad.numpy(), "t": t.grad.numpy(),
                   "params": np.concatenate([g.numpy().ravel() for g in flat]),
                   "forward_s": mid - start, "backward_s": end - mid, "nfe_forward": nfe_f,
                   "nfe_backward": func.nfe - nfe_f if adjoint else None}
            for p in params:
                p.grad = None
            return out

        return run

    def autograd(self, method: str = "adams"):
        import autograd.numpy as anp
        from autograd import grad

        from solvers_bridge import autograd_ode

        def f(s, y, p):
            w1, b1, w2, b2 = p
            return anp.dot(anp.tanh(anp.dot(y ** 3, w1) + b1), w2) + b2

        def run(tol):
            def loss(y0, t, p):
                return anp.sum(autograd_ode.odeint(f, y0, t, p, method=method, rtol=tol,
                                                   atol=tol) ** 2)

            args = (self.mlp.y0, B1_TIMES, tuple(self.mlp.params()))
            start = time.perf_counter()
            ys = autograd_ode.odeint(f, *args, method=method, rtol=tol, atol=tol)
            mid = time.perf_counter()
            nfe_f = autograd_ode.last_info["forward"].nfev
            g_y0, g_t, g_p = grad(loss, argnum=(0, 1, 2))(*args)
            end = time.perf_counter()
            # The gradient call repeats the forward solve: subtract its measured time.
            return {"ys": ys, "y0": g_y0, "t": g_t,
                    "params": np.concatenate([np.ravel(g) for g in g_p]),
                    "forward_s": mid - start, "backward_s": (end - mid) - (mid - start),
                    "nfe_forward": nfe_f, "nfe_backward": autograd_ode.last_info["backward"].nfev}

        return run

    def sides(self) -> dict:
        """Implementation label -> run(tol)."""
        return {"tfode adams (adjoint)": self.tfode("adams"),
                "tfode lsoda (adjoint)": self.tfode("lsoda"),
                "tfode lsoda (adjoint at tol/10, seminorm)": self.tfode("lsoda", 10.0),
                "autograd odeint, adams (adjoint)": self.autograd("adams"),
                "torchdiffeq dopri5, odeint_adjoint": self.torch(adjoint=True),
                "torchdiffeq dopri5, odeint (backprop)": self.torch(adjoint=False)}


def b1(args) -> tuple[list[dict], list[dict]]:
    agreement, cost = [], []
    for y0 in args.y0:
        print(f"-- B1 spiral MLP, y0 ~ {y0}")
        rows = b1_one(args, y0)
        agreement += rows[0]
        cost += rows[1]
    return agreement, cost


def b1_one(args, y0: str) -> tuple[list[dict], list[dict]]:
    problem = B1(y0)
    ref = problem.reference()
    sides = problem.sides()
    agreement = []
    for label, run in sides.items():
        r = run(args.agree_tol)
        agreement.append({"implementation": label, "y0": y0, "tol": args.agree_tol,
                          "values": _max_rel(r["ys"], ref["ys"]),
                          "grad_y0": _max_rel(r["y0"], ref["y0"]),
                          "grad_params": _max_rel(r["params"], ref["params"]),
                          "grad_t": _max_rel(r["t"], ref["t"]),
                          "nfe_forward": r["nfe_forward"], "nfe_backward": r["nfe_backward"]})
        print(f"  agreement {label}: grad_params {agreement[-1]['grad_params']:.2e}", flush=True)
    cost = []
    for tol in args.tols:
        block = []
        for label, run in sides.items():
            runs = [run(tol) for _ in range(args.repeats)]
            fwd = float(np.median([r["forward_s"] for r in runs]))
            bwd = float(np.median([r["backward_s"] for r in runs]))
            block.append({"implementation": label, "y0": y0, "tol": tol, "forward_s": fwd,
                          "backward_s": bwd, "total_s": fwd + bwd,
                          "nfe_forward": runs[-1]["nfe_forward"],
                          "nfe_backward": runs[-1]["nfe_backward"],
                          "grad_rel_error": _norm_rel(runs[-1]["params"], ref["params"])})
            print(f"  cost {label} tol {tol:g}: {fwd + bwd:.3f} s", flush=True)
        base = next(r for r in block if "odeint_adjoint" in r["implementation"])
        for r in block:
            r["time_vs_torchdiffeq_adjoint"] = r["total_s"] / base["total_s"]
        cost += block
    return agreement, cost


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
        """Milliseconds per dynamics evaluation and per vector-Jacobian product as each
        solver sees them: tfode's compiled NumPy callbacks, PyTorch's module and
        ``autograd.grad`` with respect to the state and the parameters."""
        import tensorflow as tf
        import torch

        from experiments import torch_models as tm
        from tfode._compile import Callbacks, discover_variables

        def per_call(fn):
            fn()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            return 1e3 * (time.perf_counter() - start) / repeats

        def dynamics(t, y):
            return self.func(t, y)

        shape = self.x.shape
        cb = Callbacks(dynamics, tf.float32, shape,
                       discover_variables(dynamics, tf.float32, shape, "vode"), "vode", "auto")
        y, a = self.x.astype(np.float64).ravel(), self.w.astype(np.float64).ravel()
        rows = [{"side": f"tfode (XLA {'on' if cb.jit else 'off'})",
                 "f_ms": per_call(lambda: cb.fun(0.0, y)),
                 "vjp_ms": per_call(lambda: cb.vjp(0.0, y, a))}]
        func = tm.keras_to_torch(self.func, tm.ConvODEFunc(self.channels))
        params = list(func.parameters())
        x = torch.tensor(self.x.transpose(0, 3, 1, 2).copy())
        w = torch.tensor(self.w.transpose(0, 3, 1, 2).copy())
        t = torch.tensor(0.0)

        def forward():
            with torch.no_grad():
                func(t, x)

        def vjp():
            xx = x.detach().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(func(t, xx), [xx, *params], w)

        rows.append({"side": "PyTorch", "f_ms": per_call(forward), "vjp_ms": per_call(vjp)})
        return rows

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
        r["eval_bound_s"] = 1e-3 * (r["nfe_forward"] * c["f_ms"]
                                    + (r["nfe_backward"] or 0) * c["vjp_ms"])
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for (label, marker) in zip(sides, "os"):
        pts = [(r["nfe_forward"], r["nfe_backward"]) for r in rows if r["implementation"] == label]
        ax.plot(*zip(*pts), marker, label=label)
    top = max(max(r["nfe_forward"], r["nfe_backward"]) for r in rows) * 1.1
    ax.plot([0, top], [0, top], color="0.6", lw=0.8, label="NFE-B = NFE-F")
    ax.plot([0, top], [0, top / 2], color="0.6", lw=0.8, ls="--", label="NFE-B = NFE-F / 2")
    ax.set(xlabel="forward evaluations (NFE-F)", ylabel="backward evaluations (NFE-B)",
           title=f"Figure 3c check: MNIST ODE block, tolerances {args.fig_tols}")
    ax.legend(fontsize=8)
    return rows, save_figure(fig, out / "figure3c.png")


# -- B3 ----------------------------------------------------------------------------------
MEMORY_SIDES = ("tfode_adjoint", "torch_odeint", "torch_adjoint")


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="utf-8") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def memory_one(side: str, length: int, batch: int) -> dict:
    """Peak resident memory of one gradient on ``[0, length]``, and its growth over the
    level before it. A warm-up gradient on ``[0, 1]`` first loads the frameworks'
    kernels and allocators; a thread then samples the resident size every
    millisecond during the measured gradient (the frameworks release the GIL while
    they compute)."""
    import threading

    _threads()
    problem = B2(batch=batch)
    sides = {"tfode_adjoint": lambda t_end: problem.tfode("adams", t_end=t_end),
             "torch_odeint": lambda t_end: problem.torch(adjoint=False, t_end=t_end),
             "torch_adjoint": lambda t_end: problem.torch(adjoint=True, t_end=t_end)}
    sides[side](1.0)(1e-3)
    step = sides[side](float(length))
    before = _rss_mib()
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    r = step(1e-3)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mib())
    return {"side": side, "length": length, "batch": batch, "rss_before_mib": before,
            "peak_rss_mib": peak[0], "peak_growth_mib": peak[0] - before,
            "nfe_forward": r["nfe_forward"], "nfe_backward": r["nfe_backward"]}


def b3(args, out: Path) -> tuple[list[dict], Path]:
    rows = []
    for side in MEMORY_SIDES:
        for length in args.lengths:
            proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--memory-one",
                                   side, str(length), str(args.b3_batch)],
                                  capture_output=True, text=True, timeout=3600)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"memory run {side} T={length} failed:\n"
                                   f"{proc.stderr[-2000:]}")
            rows.append(json.loads(lines[-1]))
            print(f"  B3 {side} T={length}: peak {rows[-1]['peak_rss_mib']:.0f} MiB "
                  f"(+{rows[-1]['peak_growth_mib']:.1f})", flush=True)
    for side in MEMORY_SIDES:
        mine = [r for r in rows if r["side"] == side]
        for r in mine:
            r["peak_ratio_to_first"] = r["peak_rss_mib"] / mine[0]["peak_rss_mib"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"tfode_adjoint": "tfode adjoint (Adams)",
              "torch_odeint": "torchdiffeq odeint (backprop)",
              "torch_adjoint": "torchdiffeq odeint_adjoint"}
    for side in MEMORY_SIDES:
        pts = [(r["length"], r["peak_rss_mib"]) for r in rows if r["side"] == side]
        ax.plot(*zip(*pts), "o-", label=labels[side])
    ax.set(xscale="log", xlabel="integration length T",
           ylabel="peak resident memory during one gradient (MiB)",
           title=f"B3: MNIST ODE function, batch {args.b3_batch}")
    ax.legend(fontsize=8)
    return rows, save_figure(fig, out / "memory.png")


def _floats(text):
    return [float(v) for v in text.split(",") if v]


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (3), B3 lengths 1,4,16")
    parser.add_argument("--parts", default="b1,b2,fig3c,b3", help="comma list of parts to run")
    parser.add_argument("--tols", type=_floats, default=[1e-3, 1e-6], help="B1 cost tolerances")
    parser.add_argument("--agree-tol", type=float, default=1e-10, help="B1 agreement tolerance")
    parser.add_argument("--y0", type=lambda s: s.split(","), default=["normal", "uniform"],
                        help="B1 initial points, comma list of normal (N(0, 1)) and uniform "
                             "(U(-1, 1))")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (medians)")
    parser.add_argument("--b2-batch", type=int, default=128, help="B2 batch")
    parser.add_argument("--b2-weights", default=None,
                        help="B2 at trained weights: an odenet.keras saved by experiments.mnist "
                             "(its ODE function, fed its own features of MNIST test images)")
    parser.add_argument("--fig-batch", type=int, default=32, help="Figure 3c batch")
    parser.add_argument("--fig-tols", type=_floats, default=[1e-1, 1e-2, 1e-3, 1e-4],
                        help="Figure 3c tolerances")
    parser.add_argument("--lengths", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 4, 16, 64], help="B3 integration lengths")
    parser.add_argument("--b3-batch", type=int, default=32, help="B3 batch")
    parser.add_argument("--out", default="results/compare", help="output folder")
    parser.add_argument("--memory-one", nargs=3, metavar=("SIDE", "T", "BATCH"),
                        help="internal: one B3 point")
    args = parser.parse_args(argv)
    if args.memory_one:
        side, length, batch = args.memory_one
        print(json.dumps(memory_one(side, int(length), int(batch))))
        return None
    try:
        import torch  # noqa: F401
        import torchdiffeq  # noqa: F401
    except ImportError:
        parser.error("the comparison needs the optional extra: pip install -e '.[compare]' "
                     "(torch and torchdiffeq)")
    unknown = sorted(set(args.y0) - {"normal", "uniform"})
    if unknown:
        parser.error(f"--y0 takes normal and/or uniform; got {unknown}")
    if args.quick:
        if args.repeats == parser.get_default("repeats"):
            args.repeats = 3
        if args.lengths == parser.get_default("lengths"):
            args.lengths = [1, 4, 16]
    _threads()
    import torch
    import torchdiffeq

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    summary = {"experiment": "compare", "args": vars(args), "machine": machine(),
               "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
               "threads": "1 (TensorFlow intra/inter, PyTorch, BLAS)"}
    start = time.perf_counter()
    if "b1" in parts:
        agreement, cost = b1(args)
        summary["b1_agreement"], summary["b1_cost"] = agreement, cost
        write_table(out / "b1_agreement", agreement,
                    ["implementation", "y0", "tol", "values", "grad_y0", "grad_params", "grad_t",
                     "nfe_forward", "nfe_backward"])
        write_table(out / "b1_cost", cost,
                    ["implementation", "y0", "tol", "forward_s", "backward_s", "total_s",
                     "nfe_forward", "nfe_backward", "grad_rel_error",
                     "time_vs_torchdiffeq_adjoint"])
    if "b2" in parts:
        print("-- B2 MNIST ODE block training step")
        summary["b2"], summary["b2_eval_costs"], summary["b2_weights"] = b2(args)
        write_table(out / "b2_step", summary["b2"],
                    ["implementation", "tol", "step_s", "nfe_forward", "nfe_backward",
                     "eval_bound_s", "time_vs_torchdiffeq_adjoint"])
        write_table(out / "b2_eval_costs", summary["b2_eval_costs"], ["side", "f_ms", "vjp_ms"])
    if "fig3c" in parts:
        print("-- Figure 3c: NFE-B against NFE-F")
        rows, fig = figure3c(args, out)
        summary["figure3c"], summary["figure3c_png"] = rows, str(fig)
        write_table(out / "figure3c", rows,
                    ["implementation", "tol", "nfe_forward", "nfe_backward", "ratio"])
    if "b3" in parts:
        print("-- B3 memory against integration length")
        rows, fig = b3(args, out)
        summary["b3"], summary["b3_png"] = rows, str(fig)
        write_table(out / "b3_memory", rows,
                    ["side", "length", "batch", "nfe_forward", "nfe_backward",
                     "rss_before_mib", "peak_rss_mib", "peak_growth_mib",
                     "peak_ratio_to_first"])
    return finish(out, summary, start)


if __name__ == "__main__":
    main()
