"""Benchmark B4: one training iteration of the paper's latent ODE (irregular
spirals, full ELBO step with Adam) through tfode's adjoint (SciPy ``odeint`` with
the backsolve adjoint) and its in-graph fast path (``tf_dopri5``, backpropagated),
beside torchdiffeq's dopri5 ``odeint_adjoint`` and backprop ``odeint`` on the same
model (``experiments.torch_models.LatentODE``) at the same weights, data and
reparameterisation noise, with the ELBO gradient of each against a tight reference.
Prints a table and writes JSON with the machine and thread settings; the torch rows
need the ``compare`` extra and are left out without it.

    python -m experiments.bench_latent --batch 100 --tols 1e-5,1.49012e-8 --forward adams
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    add_threads_argument,
    machine,
    markdown_table,
    script_parser,
    single_thread_all,
    single_thread_tf,
    tf_threads_label,
    write_json,
)

METHODS = ("odeint", "tf_dopri5")
TORCH = ("torchdiffeq_adjoint", "torchdiffeq_backprop")
IMPLEMENTATION = {"odeint": "tfode odeint (SciPy LSODA, adjoint)",
                  "tf_dopri5": "tfode tf_dopri5 (in-graph, backprop)",
                  "torchdiffeq_adjoint": "torchdiffeq dopri5 odeint_adjoint",
                  "torchdiffeq_backprop": "torchdiffeq dopri5 odeint (backprop)"}


def _data(batch: int, n_obs: int, seed: int):
    from experiments.latent_data import spirals, subsample

    d = spirals(n_spirals=2 * batch, n_train=batch, noise_std=0.3, seed=seed)
    idx = subsample(2 * batch, 100, n_obs, seed=seed)
    x = np.take_along_axis(d.noisy[:batch, :100], idx[:batch, :, None], 1)
    return x, d.t[idx[:batch]]


def measure(method: str, tol: float, x, t, repeats: int, reference=None,
            backward: str | None = None) -> dict:
    """Seconds per iteration (best of ``repeats``), NFE, and the gradient's relative
    error against ``reference`` (the flat gradient at a tight tolerance); ``backward``
    the adjoint's backward method (None: its default)."""
    import keras
    import tensorflow as tf

    import tfode
    from tfode.latent import LatentODE

    keras.utils.set_random_seed(0)
    extra = {} if backward is None else {"adjoint": tfode.Backsolve(method=backward)}
    model = LatentODE(obs_std=0.3, method=method, rtol=tol, atol=tol, odeint_kwargs=extra)

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
    if model.stats.backward_info is not None:
        backward = model.stats.backward_info.method
    return {"method": method, "backward": backward, "tol": tol, "step_s": best,
            "nfe_forward": nfe["nfe_forward"],
            "nfe_backward": nfe["nfe_backward"], "grad_rel_error": error, "grad": flat}


def measure_torch(kind: str, tol: float, x, t, repeats: int, reference) -> dict:
    """:func:`measure` for torchdiffeq on the twin of the same Keras model (weights
    copied, the same reparameterisation noise); the gradient is compared in the
    Keras variables' order and layout."""
    import keras
    import tensorflow as tf
    import torch
    import torchdiffeq

    from experiments.torch_models import LatentODE as TorchLatentODE
    from experiments.torch_models import keras_to_torch, torch_gradients_as_keras
    from tfode.latent import LatentODE

    keras.utils.set_random_seed(0)
    model = LatentODE(obs_std=0.3)
    twin = keras_to_torch(model, TorchLatentODE(obs_std=0.3).double())
    eps = torch.as_tensor(tf.random.stateless_normal([x.shape[0], model.latent_dim], (0, 0),
                                                     dtype=tf.float64).numpy())
    xt, tt = torch.as_tensor(x), torch.as_tensor(t)
    solve = torchdiffeq.odeint_adjoint if kind == "torchdiffeq_adjoint" else torchdiffeq.odeint
    extra = {"adjoint_params": tuple(twin.dynamics.parameters())} if "adjoint" in kind else {}
    opt = torch.optim.Adam(twin.parameters(), 0.01)

    def grads():
        twin.zero_grad()
        loss = -twin.elbo(xt, tt, eps, solve, rtol=tol, atol=tol, method="dopri5",
                          **extra).mean()
        twin.nfe = 0
        loss.backward()
        return twin.nfe

    def step():
        twin.nfe = 0
        loss = -twin.elbo(xt, tt, eps, solve, rtol=tol, atol=tol, method="dopri5",
                          **extra).mean()
        forward = twin.nfe
        opt.zero_grad()
        loss.backward()
        opt.step()
        return forward, twin.nfe - forward

    grads()
    flat = np.concatenate([g.ravel() for g in torch_gradients_as_keras(twin, model)])
    step()
    best, nfe = float("inf"), (0, 0)
    for _ in range(repeats):
        start = time.perf_counter()
        nfe = step()
        best = min(best, time.perf_counter() - start)
    error = float(np.linalg.norm(flat - reference) / np.linalg.norm(reference))
    return {"method": kind, "tol": tol, "step_s": best, "nfe_forward": nfe[0],
            "nfe_backward": nfe[1], "grad_rel_error": error, "grad": flat}


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--batch", type=int, default=100, help="sequences per iteration")
    parser.add_argument("--n-obs", type=int, default=30, help="observations per sequence")
    parser.add_argument("--tols", default="1e-5,1.49012e-8", help="rtol = atol values")
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations (best kept)")
    add_threads_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--out", default="results/benchmarks", help="output folder")
    parser.add_argument("--backward", type=lambda v: [m for m in v.split(",") if m],
                        default=[], help="also time the adjoint with these backward methods "
                                         "(comma list; the default rule's row is always there)")
    parser.add_argument("--forward", type=lambda v: [m for m in v.split(",") if m],
                        default=[], help="also time the adjoint after these SciPy forward "
                                         "methods (comma list, e.g. adams; odeint, the "
                                         "paper's, is always there)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave out torchdiffeq's rows")
    args = parser.parse_args(argv)
    kinds = list(METHODS) + [m for m in args.forward if m not in METHODS]
    if not args.no_torch:
        try:
            import torch
            import torchdiffeq  # noqa: F401
        except ImportError:
            print("torch or torchdiffeq is not installed: B4 without torchdiffeq's rows "
                  "(pip install -e '.[compare]')")
        else:
            kinds += TORCH
    if args.threads == "one":
        (single_thread_all if set(TORCH) & set(kinds) else single_thread_tf)()
    x, t = _data(args.batch, args.n_obs, args.seed)
    reference = measure("odeint", 1e-11, x, t, 0)["grad"]
    rows = []
    for tol in (float(v) for v in args.tols.split(",")):
        block = {}
        for kind in kinds:
            run = measure_torch if kind in TORCH else measure
            row = run(kind, tol, x, t, args.repeats, reference)
            row.pop("grad")
            row["implementation"] = IMPLEMENTATION.get(kind, f"tfode {kind} (SciPy, adjoint)")
            rows.append(row)
            block[kind] = row
            extra = []
            if kind not in TORCH and kind != "tf_dopri5":
                row["implementation"] += f", backward {row['backward']} (default)"
            if kind == "odeint":
                for backward in args.backward:
                    extra.append(measure(kind, tol, x, t, args.repeats, reference, backward))
                    extra[-1].pop("grad")
                    extra[-1]["implementation"] = f"{IMPLEMENTATION[kind]}, backward {backward}"
                    extra[-1]["method"] = f"odeint/{backward}"
            for r in [row] + extra:
                print(f"  {r['implementation']:55s} tol {tol:.3g}: {r['step_s']:.3f} s, NFE "
                      f"{r['nfe_forward']}/{r['nfe_backward']}, gradient error "
                      f"{r['grad_rel_error']:.1e}", flush=True)
            rows += extra
        block["tf_dopri5"]["speedup_vs_adjoint"] = (block["odeint"]["step_s"]
                                                    / block["tf_dopri5"]["step_s"])
        if "torchdiffeq_adjoint" in block:
            for kind in (k for k in kinds if k not in TORCH):  # each tfode path against torchdiffeq
                block[kind]["vs_torch_adjoint"] = (block[kind]["step_s"]
                                                   / block["torchdiffeq_adjoint"]["step_s"])
                block[kind]["vs_torch_backprop"] = (block[kind]["step_s"]
                                                    / block["torchdiffeq_backprop"]["step_s"])
    cols = ["implementation", "tol", "step_s", "nfe_forward", "nfe_backward",
            "grad_rel_error", "speedup_vs_adjoint", "vs_torch_adjoint", "vs_torch_backprop"]
    table = markdown_table(rows, cols)
    print(table)
    threads = {"tensorflow": tf_threads_label(args.threads)}
    if set(TORCH) & set(kinds):
        threads["torch"] = f"{torch.get_num_threads()} intra-op"
    name = f"latent_b4_batch{args.batch}_{args.threads}_threads.json"
    path = write_json(os.path.join(args.out, name),
                      {"benchmark": "B4 latent ODE iteration",
                       "batch": args.batch, "n_obs": args.n_obs, "threads": args.threads,
                       "thread_settings": threads, "machine": machine(), "rows": rows,
                       "table": table})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
