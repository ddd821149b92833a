"""Gradients through stiff dynamics: every adjoint on the stiff MLP
(quadrature, interpolating, checkpointed - at the output times only - and backsolve),
and the quadrature adjoint with finite-difference, dense and banded autodiff Jacobians
on a batch of 256 (``--jac-batch``).

The problem: ``f(y) = Dense(32 -> 4)(tanh(Dense(4 -> 32)(y))) - diag(1, 10, 100, 1000) y``,
a batch of 8 states, ``t`` in ``[0, 2]`` with 5 output times, loss ``sum(y^2)``,
float64, tolerance 1e-6. The reference gradient backpropagates through an in-graph
RK4 solve with 20,000 steps (``h = 1e-4``, ``h * 1000 = 0.1``). For each adjoint and
solver: forward and backward evaluations, Jacobian evaluations, time, gradient error
and the peak of Python/NumPy allocations during the gradient (``tracemalloc``: the
dense forward solution lives there); with torchdiffeq installed, its
``odeint_adjoint`` on the same weights beside them.

    python -m experiments.bench_stiff
"""

from __future__ import annotations

import os
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    machine,
    script_parser,
    single_thread_tf,
    write_json,
    write_table,
)
from experiments.problems import STIFFNESS, rk4_reference, stiff_problem  # noqa: E402


def tfode_side(func, y0, t, method: str, adjoint: str, tol: float, jacobian: str | None):
    """One forward + backward through tfode; its timings, statistics and gradients."""
    import tensorflow as tf

    import tfode

    stats = tfode.SolveStats()
    options = {"jacobian": jacobian} if jacobian else {}
    kwargs = dict(method=method, rtol=tol, atol=tol, adjoint=adjoint, stats=stats,
                  options=options)
    if adjoint == "backsolve" and method in ("bdf", "lsoda"):
        kwargs["adjoint"] = tfode.Backsolve(method=method)
    tfode.odeint(func, y0, t, **kwargs)  # traces the callbacks
    tracemalloc.start()
    start = time.perf_counter()
    with tf.GradientTape() as tape:
        tape.watch(y0)
        loss = tf.reduce_sum(tfode.odeint(func, y0, t, **kwargs) ** 2)
    mid = time.perf_counter()
    grads = tape.gradient(loss, [y0, *func.trainable_variables])
    end = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    s = stats.as_dict()
    return {"forward_s": mid - start, "backward_s": end - mid, "total_s": end - start,
            "nfe_forward": s["nfe_forward"], "nfe_backward": s["nfe_backward"],
            "njev_forward": s["njev_forward"], "njev_backward": s["njev_backward"],
            "numpy_peak_mib": peak / 2 ** 20}, [g.numpy() for g in grads]


def torch_side(func, y0, t, tol: float, method: str, options: dict | None = None):
    """torchdiffeq's odeint_adjoint on the same weights (or None without torch)."""
    try:
        import torch
        import torchdiffeq
    except ImportError:
        return None
    from torch import nn

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Linear(4, 32), nn.Linear(32, 4)
            self.decay = torch.tensor(STIFFNESS, dtype=torch.float64)
            self.nfe = 0

        def forward(self, s, y):
            self.nfe += 1
            return self.out(torch.tanh(self.hidden(y))) - self.decay * y

    twin = Twin().double()
    with torch.no_grad():
        for mine, theirs in ((func.hidden, twin.hidden), (func.out, twin.out)):
            theirs.weight.copy_(torch.tensor(mine.kernel.numpy().T))
            theirs.bias.copy_(torch.tensor(mine.bias.numpy()))
    y = torch.tensor(y0.numpy(), requires_grad=True)
    start = time.perf_counter()
    ys = torchdiffeq.odeint_adjoint(twin, y, torch.tensor(t.numpy()), rtol=tol, atol=tol,
                                    method=method, options=options)
    loss = (ys ** 2).sum()
    mid = time.perf_counter()
    nfe_f = twin.nfe
    loss.backward()
    end = time.perf_counter()
    grads = [y.grad.numpy(), twin.hidden.weight.grad.numpy().T, twin.hidden.bias.grad.numpy(),
             twin.out.weight.grad.numpy().T, twin.out.bias.grad.numpy()]
    return {"forward_s": mid - start, "backward_s": end - mid, "total_s": end - start,
            "nfe_forward": nfe_f, "nfe_backward": twin.nfe - nfe_f}, grads


def grad_error(grads, ref) -> float:
    """Relative 2-norm error of all gradients (initial state and weights) together."""
    got = np.concatenate([np.ravel(g) for g in grads])
    want = np.concatenate([np.ravel(g) for g in ref])
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


CASES = (("quadrature", "bdf", "autodiff"), ("quadrature", "lsoda", "autodiff"),
         ("quadrature", "radau", "autodiff"), ("quadrature", "bdf", None),
         ("quadrature", "bdf", "banded"), ("interpolating", "radau", None),
         ("interpolating", "lsoda", None), ("checkpointed", "radau", "autodiff"),
         ("checkpointed", "bdf", "autodiff"), ("backsolve", "bdf", "autodiff"),
         ("backsolve", "lsoda", "autodiff"), ("backsolve", "adams", None))
#: The Jacobian comparison: the quadrature adjoint with finite-difference, dense
#: autodiff and banded per-sample autodiff Jacobians on a larger batch.
JACOBIANS = (None, "autodiff", "banded")


def jacobian_comparison(args) -> list[dict]:
    """The quadrature adjoint on ``args.jac_batch`` samples with each kind of Jacobian;
    gradients compared with the banded run's."""
    func, y0, t = stiff_problem(batch=args.jac_batch)
    rows = []
    for method in ("bdf", "radau"):
        grads = {}
        for jac in JACOBIANS:
            row, grads[jac] = tfode_side(func, y0, t, method, "quadrature", args.tol, jac)
            rows.append({"batch": args.jac_batch, "method": method,
                         "jacobian": jac or "finite differences", **row})
            print(f"  Jacobians, batch {args.jac_batch}, {method}, {jac}: "
                  f"{row['total_s']:.2f} s", flush=True)
        for row, jac in zip(rows[-len(JACOBIANS):], JACOBIANS):
            row["grad_rel_diff"] = grad_error(grads[jac], grads["banded"])
    return rows


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--tol", type=float, default=1e-6, help="rtol = atol")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (medians of times)")
    parser.add_argument("--jac-batch", type=int, default=256,
                        help="samples in the Jacobian comparison")
    parser.add_argument("--out", default="results/benchmarks/stiff", help="output prefix")
    args = parser.parse_args(argv)
    single_thread_tf()
    func, y0, t = stiff_problem()
    start = time.perf_counter()
    _, ref = rk4_reference(func, y0, t)
    print(f"reference (RK4 backprop, h = 1e-4): {time.perf_counter() - start:.1f} s")
    rows = []
    for adjoint, method, jac in CASES:
        label = f"tfode {adjoint}, {method}, " + {None: "FD Jacobian", "autodiff":
                                                  "autodiff Jacobian", "banded":
                                                  "banded autodiff Jacobian"}[jac]
        try:
            runs = [tfode_side(func, y0, t, method, adjoint, args.tol, jac)
                    for _ in range(args.repeats)]
        except Exception as err:  # noqa: BLE001 - a failing adjoint is a result here
            rows.append({"implementation": label, "error": f"{type(err).__name__}: "
                         f"{str(err)[:160]}"})
            print(f"  {label}: failed ({type(err).__name__})")
            continue
        row = {"implementation": label, **runs[-1][0]}
        for key in ("forward_s", "backward_s", "total_s"):
            row[key] = float(np.median([r[0][key] for r in runs]))
        row["grad_rel_error"] = grad_error(runs[-1][1], ref)
        rows.append(row)
        print(f"  {label}: {row['total_s']:.2f} s, error {row['grad_rel_error']:.2e}")
    for name, method, options in (("dopri5", "dopri5", None),
                                  ("SciPy LSODA", "scipy_solver", {"solver": "LSODA"})):
        label = f"torchdiffeq odeint_adjoint, {name}"
        try:
            res = torch_side(func, y0, t, args.tol, method, options)
        except Exception as err:  # noqa: BLE001 - a failing adjoint is a result here
            rows.append({"implementation": label, "error": f"{type(err).__name__}: "
                         f"{str(err)[:160]}"})
            continue
        if res is None:
            break
        rows.append({"implementation": label, **res[0],
                     "grad_rel_error": grad_error(res[1], ref)})
        print(f"  {label}: {rows[-1]['total_s']:.2f} s, "
              f"error {rows[-1]['grad_rel_error']:.2e}")
    cols = ["implementation", "forward_s", "backward_s", "total_s", "nfe_forward",
            "nfe_backward", "njev_forward", "njev_backward", "numpy_peak_mib",
            "grad_rel_error", "error"]
    from pathlib import Path

    write_table(Path(args.out), rows, cols)
    jac_rows = jacobian_comparison(args)
    write_table(Path(args.out + "_jacobians"), jac_rows,
                ["batch", "method", "jacobian", "forward_s", "backward_s", "total_s",
                 "nfe_forward", "nfe_backward", "njev_forward", "njev_backward",
                 "grad_rel_diff"])
    write_json(args.out + ".json", {"benchmark": "stiff MLP, every adjoint",
                                    "machine": machine(), "tol": args.tol, "rows": rows,
                                    "jacobians": jac_rows})
    print(f"wrote {args.out}.json, .md and .csv")
    return rows


if __name__ == "__main__":
    main()
