"""The in-graph fast path under XLA: one value-and-gradient call of ``tf_dopri5`` inside
``tf.function(jit_compile=True)`` beside the same call in a plain ``tf.function``.

XLA preallocates the backward pass's loop stacks for every step the loop may take, so a
gradient under XLA needs ``options={"max_steps": N}`` (tfode refuses the default budget
there) and costs time in proportion to N. This measures that cost: the dynamics
``dy/dt = tanh(y W1) W2`` on a ``[batch, dim]`` float64 state over ``t`` in [0, 1] at
rtol = atol = ``--tol``, the plain call once, then the XLA call at ``max_steps`` of
``--factors`` times the steps the solve takes. Both sides run in this process with
the same weights; the table gives each call's median time and its ratio to the plain
call. Prints a table and writes JSON with the machine and thread settings.

    python -m experiments.bench_xla --threads one
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments._common import (  # noqa: E402
    add_threads_argument,
    machine,
    markdown_table,
    script_parser,
    single_thread_tf,
    tf_threads_label,
    write_json,
)


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """(first call's seconds, including the trace and compilation; median of
    ``repeats`` further calls; the last result)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        float(out[0])  # the value, so that the call has finished
        times.append(time.perf_counter() - start)
    times.sort()
    return first, times[len(times) // 2], out


def measure(batch: int = 128, dim: int = 64, hidden: int = 64, tol: float = 1e-6,
            factors=(1.5, 4.0, 16.0), repeats: int = 10, log=print) -> list[dict]:
    """The rows of the table: plain ``tf.function``, then XLA at each step budget."""
    import numpy as np
    import tensorflow as tf

    import tfode

    rng = np.random.default_rng(0)
    w1 = tf.Variable(rng.normal(0.0, 0.3, (dim, hidden)))
    w2 = tf.Variable(rng.normal(0.0, 0.3, (hidden, dim)))
    y0 = tf.constant(rng.normal(size=(batch, dim)))
    t = tf.constant([0.0, 1.0], tf.float64)

    def func(_, y):
        return tf.tanh(y @ w1) @ w2

    stats = tfode.SolveStats()
    tfode.odeint(func, y0, t, method="tf_dopri5", rtol=tol, atol=tol, stats=stats)
    steps = stats.as_dict()["steps_forward"]

    def call(options):
        def run():
            with tf.GradientTape() as tape:
                ys = tfode.odeint(func, y0, t, method="tf_dopri5", rtol=tol, atol=tol,
                                  options=options)
                loss = tf.reduce_sum(ys[-1] ** 2)
            return (loss, *tape.gradient(loss, [w1, w2]))
        return run

    rows = []
    first, median, ref = _timed(tf.function(call({}), autograph=False), repeats)
    rows.append({"compile": "tf.function", "max_steps": "default", "first_call_s": first,
                 "median_s": median, "ratio": 1.0, "max_grad_rel_diff": 0.0})
    log(f"  tf.function: {median * 1e3:.2f} ms per call ({steps} steps)", flush=True)
    for factor in factors:
        budget = int(np.ceil(factor * steps))
        fn = tf.function(call({"max_steps": budget}), jit_compile=True, autograph=False)
        first, t_xla, out = _timed(fn, repeats)
        diff = max(float(np.max(np.abs(a.numpy() - b.numpy())) / np.max(np.abs(b.numpy())))
                   for a, b in zip(out[1:], ref[1:]))
        rows.append({"compile": "jit_compile=True", "max_steps": budget, "first_call_s": first,
                     "median_s": t_xla, "ratio": t_xla / median, "max_grad_rel_diff": diff})
        log(f"  XLA, max_steps {budget}: {t_xla * 1e3:.2f} ms per call "
            f"({t_xla / median:.2f}x)", flush=True)
    for r in rows:
        r.update(batch=batch, dim=dim, tol=tol, steps=steps)
    return rows


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--batch", type=int, default=128, help="rows of the state")
    parser.add_argument("--dim", type=int, default=64, help="columns of the state")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units of the dynamics")
    parser.add_argument("--tol", type=float, default=1e-6, help="rtol = atol")
    parser.add_argument("--factors", default="1.5,4,16",
                        help="XLA step budgets, as multiples of the steps the solve takes")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per row")
    add_threads_argument(parser)
    parser.add_argument("--out", default="results/benchmarks", help="output folder")
    args = parser.parse_args(argv)
    if args.threads == "one":
        single_thread_tf()
    rows = measure(args.batch, args.dim, args.hidden, args.tol,
                   [float(f) for f in args.factors.split(",")], args.repeats)
    table = markdown_table(rows, ["compile", "max_steps", "steps", "first_call_s", "median_s",
                                  "ratio", "max_grad_rel_diff"])
    print(table)
    threads = tf_threads_label(args.threads)
    path = write_json(os.path.join(args.out, f"xla_{args.threads}_threads.json"),
                      {"benchmark": "tf_dopri5 value and gradient under XLA",
                       "thread_settings": {"tensorflow": threads}, "machine": machine(),
                       "args": vars(args), "rows": rows, "table": table})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
