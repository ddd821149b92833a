"""B1 of the comparison: the spiral MLP, tfode beside torchdiffeq and autograd's odeint
(agreement at a tight tolerance, cost at 1e-3 and 1e-6). Run through
``python -m experiments.compare --parts b1``.
"""

from __future__ import annotations

import time

import numpy as np

from experiments._common import eval_bound_s, eval_cost_rows

B1_TIMES = np.linspace(0.0, 25.0, 10)


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
        from experiments.ode_demo import build_model
        from experiments.problems import SpiralMLP

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

    def tfode(self, method: str, tighter_adjoint: float = 1.0, graph: bool = False):
        """tfode's adjoint; ``tighter_adjoint > 1`` divides the backward tolerances by it
        and takes the gradient integrals out of error control (seminorm). ``graph``
        runs solve and gradient as one ``tf.function`` (as ``model.fit`` does): then only
        their total time is measured."""
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

        def solve(tol):
            with tf.GradientTape() as tape:
                tape.watch([y0, t])
                ys = tfode.odeint(func, y0, t, method=method, rtol=tol, atol=tol,
                                  stats=stats, options=options, **adjoint_kw(tol))
                loss = tf.reduce_sum(ys ** 2)
            return tape, ys, loss

        def gradient(tape, loss):
            return tape.gradient(loss, [y0, t, *model.trainable_variables])

        @tf.function
        def solve_and_grad(tol):
            tape, ys, loss = solve(tol)
            return ys, gradient(tape, loss)

        traced = set()

        def run(tol):
            if graph and tol not in traced:  # one trace per tolerance, outside the timing
                solve_and_grad(tol)
                traced.add(tol)
            start = time.perf_counter()
            if graph:
                ys, (g_y0, g_t, *g_p) = solve_and_grad(tol)
                g_p = [g.numpy() for g in g_p]
                times = {"forward_s": None, "backward_s": None,
                         "total_s": time.perf_counter() - start}
            else:
                tape, ys, loss = solve(tol)
                mid = time.perf_counter()
                g_y0, g_t, *g_p = gradient(tape, loss)
                end = time.perf_counter()
                times = {"forward_s": mid - start, "backward_s": end - mid,
                         "total_s": end - start}
            return {"ys": ys.numpy(), "y0": g_y0.numpy(), "t": g_t.numpy(),
                    "params": np.concatenate([np.ravel(g) for g in g_p]), **times,
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

    def eval_costs(self, repeats: int = 200) -> list[dict]:
        """Per-call costs of an evaluation and a VJP on each side
        (:func:`experiments._common.eval_cost_rows`); tfode's are the callbacks its
        adjoint methods call."""
        import torch

        import tfode
        from experiments import torch_models as tm

        model = self.keras
        cb = tfode.numpy_callbacks(lambda s, y: model(y ** 3), self.mlp.shape, method="adams")
        y = self.mlp.y0.ravel().copy()
        func = tm.keras_to_torch(model, tm.SpiralMLP().double())
        return eval_cost_rows(cb, y, np.ones_like(y), func, torch.tensor(self.mlp.y0),
                              torch.ones(self.mlp.shape, dtype=torch.float64),
                              torch.tensor(0.0, dtype=torch.float64), repeats)

    def sides(self) -> dict:
        """Implementation label -> run(tol)."""
        return {"tfode adams (adjoint)": self.tfode("adams"),
                "tfode lsoda (adjoint)": self.tfode("lsoda"),
                "tfode lsoda (adjoint at tol/10, seminorm)": self.tfode("lsoda", 10.0),
                "tfode tf_dopri5 (in-graph, backprop)": self.tfode("tf_dopri5"),
                "tfode tf_dopri5 (in-graph, backprop, tf.function)":
                    self.tfode("tf_dopri5", graph=True),
                "autograd odeint, adams (adjoint)": self.autograd("adams"),
                "torchdiffeq dopri5, odeint_adjoint": self.torch(adjoint=True),
                "torchdiffeq dopri5, odeint (backprop)": self.torch(adjoint=False)}


def b1(args) -> tuple[list[dict], list[dict], list[dict]]:
    """B1's agreement rows, cost rows and per-evaluation costs, for each y0 law.

    Each adjoint cost row also gets ``eval_bound_s``: its evaluations priced at the
    measured per-evaluation costs, the time it would take if its solver and framework
    cost nothing else (and that over torchdiffeq's ``odeint_adjoint`` total)."""
    agreement, cost, evals = [], [], []
    for y0 in args.y0:
        print(f"-- B1 spiral MLP, y0 ~ {y0}")
        rows = b1_one(args, y0)
        agreement += rows[0]
        cost += rows[1]
        evals += rows[2]
    return agreement, cost, evals


def b1_one(args, y0: str) -> tuple[list[dict], list[dict], list[dict]]:
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
    costs = problem.eval_costs()
    for c in costs:
        print(f"  per evaluation, {c['side']}: f {1e3 * c['f_ms']:.0f} us, "
              f"VJP {1e3 * c['vjp_ms']:.0f} us", flush=True)
    cost = []
    for tol in args.tols:
        # Round robin: each repeat runs every side once, so that a slow spell of the
        # machine falls on all of them alike.
        runs = {label: [] for label in sides}
        for _ in range(args.repeats):
            for label, run in sides.items():
                runs[label].append(run(tol))
        block = []
        for label, rs in runs.items():
            if rs[0]["forward_s"] is None:  # one call: only the total is timed
                fwd = bwd = None
                total = float(np.median([r["total_s"] for r in rs]))
            else:
                fwd = float(np.median([r["forward_s"] for r in rs]))
                bwd = float(np.median([r["backward_s"] for r in rs]))
                total = fwd + bwd
            row = {"implementation": label, "y0": y0, "tol": tol, "forward_s": fwd,
                   "backward_s": bwd, "total_s": total, "nfe_forward": rs[-1]["nfe_forward"],
                   "nfe_backward": rs[-1]["nfe_backward"],
                   "grad_rel_error": _norm_rel(rs[-1]["params"], ref["params"]),
                   "eval_bound_s": None}
            if label.startswith("tfode") and "adjoint" in label:
                row["eval_bound_s"] = eval_bound_s(row, costs[0])
            elif "odeint_adjoint" in label:
                row["eval_bound_s"] = eval_bound_s(row, costs[1])
            block.append(row)
            print(f"  cost {label} tol {tol:g}: {total:.3f} s", flush=True)
        base = next(r for r in block if "odeint_adjoint" in r["implementation"])
        for r in block:
            r["time_vs_torchdiffeq_adjoint"] = r["total_s"] / base["total_s"]
            r["eval_bound_vs_torchdiffeq_adjoint"] = (
                None if r["eval_bound_s"] is None else r["eval_bound_s"] / base["total_s"])
        cost += block
    for c in costs:
        c["y0"] = y0
    return agreement, cost, costs
