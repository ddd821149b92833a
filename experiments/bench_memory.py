"""Benchmark B3: peak memory of one training step as the
integration length T grows, for the ODE-Net with the adjoint (O(1)), the RK-Net
(RK4 with T steps, backpropagated: O(L~)) and a ResNet of T blocks (O(L)).

Each point runs in a fresh process with TensorFlow's BFC allocator on the CPU
(``TF_CPU_ALLOCATOR_USE_BFC=true``, which keeps allocation statistics): build the
MNIST model, take one training step (batch 128, random data) to trace and warm up,
reset the statistics, take a second step, and report the peak of TensorFlow's
allocations above the level before it, plus the peak of Python/NumPy allocations
during the step (``tracemalloc``: the solver's state, outputs and work arrays).

    python -m experiments.bench_memory --lengths 1,4,16,64
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments._common import (  # noqa: E402
    json_from_fresh_process,
    pyplot,
    save_figure,
    script_parser,
)

KINDS = ("odenet", "rknet", "resnet")


def measure_one(kind: str, length: int, batch: int = 128, tol: float = 1e-3) -> dict:
    """Peak memory (MiB) of one training step of ``kind`` at integration length ``length``."""
    import tracemalloc

    import keras
    import numpy as np
    import tensorflow as tf

    from experiments.mnist_models import build_model, ode_block

    model = build_model(kind, blocks=length, rk_steps=length, t_end=float(length), tol=tol)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model.train_on_batch(x, y)
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tracemalloc.start()
    model.train_on_batch(x, y)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tf_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    block = ode_block(model)
    nfe = None if block is None else (int(block.stats.nfe_forward.numpy()),
                                      int(block.stats.nfe_backward.numpy()))
    evaluations = {"resnet": length, "rknet": 4 * length}.get(kind, nfe[0] if nfe else None)
    mib = 1024.0 ** 2
    return {"kind": kind, "length": length, "peak_mib": (tf_peak + py_peak) / mib,
            "tf_peak_mib": tf_peak / mib, "numpy_peak_mib": py_peak / mib,
            "evaluations": evaluations,
            "nfe_forward_backward": nfe, "batch": batch}


def measure(kinds=KINDS, lengths=(1, 4, 16, 64), batch: int = 128, log=print) -> list[dict]:
    """Runs :func:`measure_one` for every (kind, length) in a fresh process."""
    rows = []
    for kind in kinds:
        for length in lengths:
            row = json_from_fresh_process(
                "experiments.bench_memory", ["--one", kind, str(length), "--batch", str(batch)],
                f"memory run {kind} {length}", timeout=1800,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CPU_ALLOCATOR_USE_BFC="true"))
            log(f"  {kind:7s} T={length:3d}: peak {row['peak_mib']:8.1f} MiB "
                f"(evaluations {row['evaluations']})")
            rows.append(row)
    return rows


def plot(rows: list[dict], path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"odenet": "ODE-Net, adjoint", "rknet": "RK-Net (RK4, backprop)",
              "resnet": "ResNet (T blocks)"}
    for kind in KINDS:
        pts = [(r["length"], r["peak_mib"]) for r in rows if r["kind"] == kind]
        if pts:
            ax.plot(*zip(*pts), "o-", label=labels[kind])
    ax.set(xscale="log", xlabel="integration length T (ResNet blocks, RK4 steps)",
           ylabel="peak memory of a training step (MiB)",
           title="Memory against depth (batch 128, MNIST model)")
    ax.legend()
    save_figure(fig, path, dpi=110)


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--lengths", default="1,4,16,64", help="integration lengths T")
    parser.add_argument("--kinds", default=",".join(KINDS), help="models to measure")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--out", default="results/benchmarks/memory", help="output prefix")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.batch)))
        return None
    from experiments._common import machine, markdown_table, write_json

    rows = measure(args.kinds.split(","), [int(x) for x in args.lengths.split(",")], args.batch)
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        for r in mine:
            r["ratio_to_T1"] = r["peak_mib"] / mine[0]["peak_mib"] if mine[0]["peak_mib"] else None
    print(markdown_table(rows, ["kind", "length", "evaluations", "tf_peak_mib", "numpy_peak_mib",
                                "peak_mib", "ratio_to_T1"]))
    write_json(args.out + ".json", {"benchmark": "B3 memory against depth", "machine": machine(),
                                    "rows": rows})
    plot(rows, args.out + ".png")
    print(f"wrote {args.out}.json and {args.out}.png")
    return rows


if __name__ == "__main__":
    main()
