"""Memory growth over training: the resident memory a long run gains per training
step, for each solver of the latent ODE iteration (benchmark B4's model and data),
beside the in-graph ``tf_dopri5`` (no SciPy, no callbacks) as the baseline.

A leak in the solver bridge shows as growth per step above the baseline's; a
paper-scale run takes thousands of steps, so a megabyte per step is gigabytes per run.
Each method runs in a fresh process: build the model, take ``--warmup`` steps (tracing,
allocator pools, SciPy's work arrays), read the resident set size, take ``--steps``
more, read it again. Prints a table and writes JSON with the machine and threads. The
default methods cover each SciPy integrator the bridge drives (LSODA, VODE, DOPRI5);
``bdf`` shares VODE with ``adams`` and is slow on this non-stiff problem.

    python -m experiments.bench_growth --methods odeint,adams,dopri5,tf_dopri5
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments._common import (  # noqa: E402
    add_threads_argument,
    json_from_fresh_process,
    machine,
    markdown_table,
    script_parser,
    single_thread_tf,
    tf_threads_label,
    write_json,
)

METHODS = ("odeint", "adams", "dopri5", "tf_dopri5")
BASELINE = "tf_dopri5"


def resident_mib() -> float:
    """This process's resident set size in MiB (Linux ``/proc``; elsewhere the peak,
    which only bounds the growth from above)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2.0 ** 20
    except (OSError, ValueError):
        import resource

        scale = 1.0 if sys.platform == "darwin" else 1024.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2.0 ** 20


def measure_one(method: str, batch: int, n_obs: int, tol: float, warmup: int,
                steps: int) -> dict:
    """Resident memory before and after ``steps`` training steps of the latent ODE
    (after ``warmup`` steps), in this process."""
    import keras
    import tensorflow as tf

    from experiments.bench_latent import _data
    from tfode.latent import LatentODE

    x, t = _data(batch, n_obs, 0)
    keras.utils.set_random_seed(0)
    model = LatentODE(obs_std=0.3, method=method, rtol=tol, atol=tol)
    opt = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.elbo(x, t, seed=(0, 0)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(warmup):
        step()
    before = resident_mib()
    for _ in range(steps):
        step()
    after = resident_mib()
    nfe = model.stats.as_dict()
    return {"method": method, "batch": batch, "n_obs": n_obs, "tol": tol,
            "warmup": warmup, "steps": steps, "rss_before_mib": before,
            "rss_after_mib": after, "growth_mib_per_step": (after - before) / steps,
            "nfe_forward": nfe["nfe_forward"], "nfe_backward": nfe["nfe_backward"]}


def measure(methods, batch: int = 100, n_obs: int = 30, tol: float = 1e-5,
            warmup: int = 20, steps: int = 100, threads: str = "default",
            log=print) -> list[dict]:
    """Runs :func:`measure_one` for each method in a fresh process."""
    rows = []
    for method in methods:
        row = json_from_fresh_process(
            "experiments.bench_growth",
            ["--one", method, "--batch", str(batch), "--n-obs", str(n_obs), "--tol", repr(tol),
             "--warmup", str(warmup), "--steps", str(steps), "--threads", threads],
            f"growth run of {method!r}", env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        log(f"  {method:10s}: {row['growth_mib_per_step']:7.3f} MiB per step "
            f"({row['rss_before_mib']:.0f} -> {row['rss_after_mib']:.0f} MiB over "
            f"{steps} steps)", flush=True)
        rows.append(row)
    base = next((r for r in rows if r["method"] == BASELINE), None)
    for r in rows:
        r["above_baseline_mib_per_step"] = (None if base is None else
                                            r["growth_mib_per_step"]
                                            - base["growth_mib_per_step"])
    return rows


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--methods", default=",".join(METHODS), help="solvers to measure")
    parser.add_argument("--batch", type=int, default=100, help="sequences per step")
    parser.add_argument("--n-obs", type=int, default=30, help="observations per sequence")
    parser.add_argument("--tol", type=float, default=1e-5, help="rtol = atol")
    parser.add_argument("--warmup", type=int, default=20, help="steps before the first reading")
    parser.add_argument("--steps", type=int, default=100, help="steps between the readings")
    add_threads_argument(parser)
    parser.add_argument("--out", default="results/benchmarks", help="output folder")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        if args.threads == "one":
            single_thread_tf()
        print(json.dumps(measure_one(args.one, args.batch, args.n_obs, args.tol,
                                     args.warmup, args.steps)))
        return None
    rows = measure(args.methods.split(","), args.batch, args.n_obs, args.tol, args.warmup,
                   args.steps, args.threads)
    table = markdown_table(rows, ["method", "steps", "rss_before_mib", "rss_after_mib",
                                  "growth_mib_per_step", "above_baseline_mib_per_step",
                                  "nfe_forward", "nfe_backward"])
    print(table)
    threads = tf_threads_label(args.threads)
    path = write_json(os.path.join(args.out, f"growth_{args.threads}_threads.json"),
                      {"benchmark": "memory growth per latent ODE training step",
                       "baseline": BASELINE, "thread_settings": {"tensorflow": threads},
                       "machine": machine(), "rows": rows, "table": table})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
