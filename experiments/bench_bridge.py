"""Benchmarks B1 (spiral MLP: tfode vs the same solver on NumPy dynamics) and B5
(the bridge's cost per evaluation).

Both sides run in this one process on the same weights, solver and tolerances; the
NumPy side is the floor (hand-written dynamics and vector-Jacobian product). The
table is printed and written as JSON.

    python -m experiments.bench_bridge --out results/benchmarks/bridge.json
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (
    # noqa: E402
    machine,
    markdown_table,
    script_parser,
    single_thread_tf,
    write_json,
)
from experiments.problems import SpiralMLP  # noqa: E402


def solver_options(method: str) -> dict:
    """LSODA gets the banded finite-difference Jacobian of a batch of independent 2-D
    points (bandwidth 1): without it, its stiff mode would need a dense 2000 x 2000 one,
    which the bridge refuses."""
    return {"lband": 1, "uband": 1} if method in ("lsoda", "odeint", "bdf") else {}


def numpy_side(mlp: SpiralMLP, t, method, tol):
    """Forward and backward with NumPy dynamics through the bridge: (ys, grads, stats)."""
    import solvers_bridge as sb

    def run():
        t0 = time.perf_counter()
        ys, finfo = sb.solve(mlp.fun, mlp.y0.ravel(), t, method, tol, tol,
                             **solver_options(method))
        t1 = time.perf_counter()
        res = sb.adjoint(mlp.vjp, t, ys, 2.0 * ys, mlp.n_params, rtol=tol, atol=tol,
                         method=sb.default_adjoint_method(method, 2 * ys.shape[1] + 1 +
                                                          mlp.n_params), fun=mlp.fun)
        t2 = time.perf_counter()
        return ys, res.grad_params, finfo.nfev, res.info.nfev, t1 - t0, t2 - t1

    return run


def tfode_side(mlp: SpiralMLP, t, method, tol, jit_compile):
    import tensorflow as tf

    import tfode

    variables = [tf.Variable(p) for p in mlp.params()]
    w1, b1, w2, b2 = variables

    def func(s, y):
        return tf.matmul(tf.tanh(tf.matmul(y ** 3, w1) + b1), w2) + b2

    y0 = tf.constant(mlp.y0)
    tt = tf.constant(t)
    stats = tfode.SolveStats()
    # Warm-up: traces (and XLA-compiles) the callbacks once.
    tfode.odeint(func, y0, tt, method=method, rtol=tol, atol=tol, jit_compile=jit_compile,
                 options=solver_options(method))

    def run():
        t0 = time.perf_counter()
        with tf.GradientTape() as tape:
            ys = tfode.odeint(func, y0, tt, method=method, rtol=tol, atol=tol, stats=stats,
                              jit_compile=jit_compile, options=solver_options(method))
            loss = tf.reduce_sum(ys ** 2)
        t1 = time.perf_counter()
        grads = tape.gradient(loss, variables)
        t2 = time.perf_counter()
        flat = np.concatenate([g.numpy().ravel() for g in grads])
        return (ys.numpy(), flat, int(stats.nfe_forward.numpy()), int(stats.nfe_backward.numpy()),
                t1 - t0, t2 - t1)

    return run, func, variables


def b5(mlp: SpiralMLP, func, variables, repeats: int = 300):
    """Per-evaluation cost: tfode's callbacks vs the compiled TF call on tensors vs NumPy."""
    import tensorflow as tf

    import tfode

    cb = tfode.numpy_callbacks(func, mlp.shape, tf.float64, method="adams")
    rng = np.random.default_rng(1)
    y, a = rng.normal(size=mlp.y0.size), rng.normal(size=mlp.y0.size)
    yt, at, tt = tf.constant(y), tf.constant(a), tf.constant(0.5, tf.float64)
    f_cf = tf.function(lambda s, z: tf.reshape(func(s, tf.reshape(z, mlp.shape)), [-1]))
    f_cf = f_cf.get_concrete_function(tt, yt)

    def vjp_tensors(s, z, w):
        zz = tf.reshape(z, mlp.shape)
        with tf.GradientTape() as tape:
            tape.watch([s, zz])
            out = func(s, zz)
        g = tape.gradient(out, [zz, s, *variables], output_gradients=tf.reshape(w, mlp.shape),
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.concat([tf.reshape(out, [-1])] + [tf.reshape(x, [-1]) for x in g], 0)

    vjp_cf = tf.function(vjp_tensors).get_concrete_function(tt, yt, at)

    def per_call(fn):
        for _ in range(20):
            fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e6

    rows = [
        {"path": "tfode callback (NumPy in/out, as the solver sees it)",
         "fun_us": per_call(lambda: cb.fun(0.5, y)), "vjp_us": per_call(lambda: cb.vjp(0.5, y, a)),
         "xla": cb.jit},
        {"path": "compiled TF function on tensors (cf(...), no XLA)",
         "fun_us": per_call(lambda: f_cf(tt, yt)), "vjp_us": per_call(lambda: vjp_cf(tt, yt, at)),
         "xla": False},
        {"path": "hand-written NumPy (the floor)",
         "fun_us": per_call(lambda: mlp.fun(0.5, y)),
         "vjp_us": per_call(lambda: mlp.vjp(0.5, y, a)),
         "xla": False},
    ]
    return rows


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--methods", default="adams,lsoda", help="comma-separated methods")
    parser.add_argument("--tols", default="1e-3,1e-6,1e-8", help="comma-separated rtol=atol values")
    parser.add_argument("--batch", type=int, default=1000, help="points in the state")
    parser.add_argument("--y0", default="normal", choices=["normal", "uniform"],
                        help="initial points: N(0, 1) or U(-1, 1) (the benchmark leaves it open)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--ref-tol", type=float, default=1e-11, help="reference tolerance")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"],
                        help="XLA for tfode's dynamics callbacks")
    parser.add_argument("--threads", default="1", choices=["1", "default"],
                        help="TensorFlow threads (NumPy BLAS is pinned to 1 by the environment)")
    parser.add_argument("--out", default="results/benchmarks/bridge.json", help="JSON output")
    args = parser.parse_args(argv)
    if args.threads == "1":
        single_thread_tf()
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    mlp = SpiralMLP(batch=args.batch, y0_dist=args.y0)
    t = np.linspace(0.0, 25.0, 10)
    ref_ys, ref_grad, *_ = numpy_side(mlp, t, "dop853", args.ref_tol)()
    rows = []
    func = variables = None
    for method in args.methods.split(","):
        for tol in (float(x) for x in args.tols.split(",")):
            for side in ("numpy", "tfode"):
                if side == "numpy":
                    run = numpy_side(mlp, t, method, tol)
                else:
                    run, func, variables = tfode_side(mlp, t, method, tol, jit)
                runs = [run() for _ in range(args.repeats)]  # each run times itself
                fwd = float(np.median([r[4] for r in runs]))
                bwd = float(np.median([r[5] for r in runs]))
                ys, grad, nfe_f, nfe_b = runs[-1][:4]
                rows.append({
                    "method": method, "tol": tol, "side": side, "forward_s": fwd,
                    "backward_s": bwd, "total_s": fwd + bwd, "nfe_forward": nfe_f,
                    "nfe_backward": nfe_b,
                    "grad_rel_error": float(np.linalg.norm(grad - ref_grad)
                                            / np.linalg.norm(ref_grad)),
                })
            rows[-1]["ratio_vs_numpy"] = rows[-1]["total_s"] / rows[-2]["total_s"]
    b5_rows = b5(mlp, func, variables)
    cols = ["method", "tol", "side", "forward_s", "backward_s", "total_s", "nfe_forward",
            "nfe_backward", "grad_rel_error", "ratio_vs_numpy"]
    print(f"B1 spiral-mlp (batch {args.batch}, y0 {args.y0}, 10 outputs on [0, 25], "
          f"medians of {args.repeats})")
    print(markdown_table(rows, cols))
    print("\nB5 cost per evaluation (microseconds)")
    print(markdown_table(b5_rows, ["path", "fun_us", "vjp_us", "xla"]))
    out = write_json(args.out, {"benchmark": "B1 spiral-mlp and B5 bridge overhead",
                                "machine": machine(), "threads": args.threads, "y0": args.y0,
                                "jit_compile": args.jit_compile, "b1": rows, "b5": b5_rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
