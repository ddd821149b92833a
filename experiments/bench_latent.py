"""Benchmark B4 (tfode's side): one training iteration of the paper's latent ODE
(irregular spirals, full ELBO step with Adam) through the paper's adjoint (SciPy
``odeint`` with the backsolve adjoint) and through the in-graph fast path
(``tf_dopri5``, backpropagated), at the same weights, data and seeds, with the
ELBO gradient of each against a tight reference. Prints a table and writes JSON
with the machine and thread settings.

    python -m experiments.bench_latent --batch 100 --tols 1e-5,1.49012e-8
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    machine,
    markdown_table,
    script_parser,
    single_thread_tf,
    write_json,
)

METHODS = ("odeint", "tf_dopri5")


def _data(batch: int, n_obs: int, seed: int):
    from experiments.latent_data import spirals, subsample

    d = spirals(n_spirals=2 * batch, n_train=batch, noise_std=0.3, seed=seed)
    idx = subsample(2 * batch, 100, n_obs, seed=seed)
    x = np.take_along_axis(d.noisy[:batch, :100], idx[:batch, :, None], 1)
    return x, d.t[idx[:batch]]


def measure(method: str, tol: float, x, t, repeats: int, reference=None) -> dict:
    """Seconds per iteration (best of ``repeats``), NFE, and the gradient's relative
    error against ``reference`` (the flat gradient at a tight tolerance)."""
    import keras
    import tensorflow as tf

    from tfode.latent import LatentODE

    keras.utils.set_random_seed(0)
    model = LatentODE(obs_std=0.3, method=method, rtol=tol, atol=tol)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.elbo(x, t, seed=(0, 0)))
        return loss, tape.gradient(loss, model.trainable_variables)

    opt = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        loss, g = grads()
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss

    _, g = grads()  # at the initial weights, before any step
    flat = np.concatenate([v.numpy().ravel() for v in g])
    step()  # traces
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    nfe = model.stats.as_dict()
    error = (None if reference is None
             else float(np.linalg.norm(flat - reference) / np.linalg.norm(reference)))
    return {"method": method, "tol": tol, "step_s": best, "nfe_forward": nfe["nfe_forward"],
            "nfe_backward": nfe["nfe_backward"], "grad_rel_error": error, "grad": flat}


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--batch", type=int, default=100, help="sequences per iteration")
    parser.add_argument("--n-obs", type=int, default=30, help="observations per sequence")
    parser.add_argument("--tols", default="1e-5,1.49012e-8", help="rtol = atol values")
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations (best kept)")
    parser.add_argument("--threads", default="default", choices=["default", "one"],
                        help="TensorFlow threads: its defaults, or one intra- and inter-op")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--out", default="results/benchmarks", help="output folder")
    args = parser.parse_args(argv)
    if args.threads == "one":
        single_thread_tf()
    x, t = _data(args.batch, args.n_obs, args.seed)
    reference = measure("odeint", 1e-11, x, t, 0)["grad"]
    rows = []
    for tol in (float(v) for v in args.tols.split(",")):
        for method in METHODS:
            row = measure(method, tol, x, t, args.repeats, reference)
            row.pop("grad")
            rows.append(row)
            print(f"  {method:10s} tol {tol:.3g}: {row['step_s']:.3f} s, NFE "
                  f"{row['nfe_forward']}/{row['nfe_backward']}, gradient error "
                  f"{row['grad_rel_error']:.1e}", flush=True)
        adjoint, fast = rows[-2], rows[-1]
        fast["speedup_vs_adjoint"] = adjoint["step_s"] / fast["step_s"]
    cols = ["method", "tol", "step_s", "nfe_forward", "nfe_backward", "grad_rel_error",
            "speedup_vs_adjoint"]
    table = markdown_table(rows, cols)
    print(table)
    path = write_json(os.path.join(args.out, f"latent_b4_{args.threads}_threads.json"),
                      {"benchmark": "B4 latent ODE iteration (tfode side)",
                       "batch": args.batch, "n_obs": args.n_obs, "threads": args.threads,
                       "machine": machine(), "rows": rows, "table": table})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
