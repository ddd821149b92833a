"""Benchmark B2: one training step of the paper's MNIST
ODE-Net (batch 128, VODE Adams at tolerance 1e-3, float32 dynamics, adjoint
gradient): wall time per step and forward / backward NFE, with the RK-Net and
ResNet steps measured in the same run for scale. The PyTorch/torchdiffeq side of
this benchmark belongs to ``experiments.compare`` (optional extra ``compare``).

    python -m experiments.bench_mnist_step --steps 5
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import machine, markdown_table, script_parser, write_json  # noqa: E402


def step_times(name: str, steps: int, batch: int, tol: float, method: str) -> dict:
    import keras

    from experiments.mnist_models import build_model, ode_block

    model = build_model(name, tol=tol, method=method)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model.train_on_batch(x, y)  # trace and warm up
    block = ode_block(model)
    times, nfe = [], []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
        if block is not None:
            nfe.append((int(block.stats.nfe_forward.numpy()),
                        int(block.stats.nfe_backward.numpy())))
    row = {"model": name, "step_s_median": float(np.median(times)),
           "step_s_min": float(np.min(times)), "steps": steps, "batch": batch}
    if nfe:
        row["nfe_forward"] = float(np.median([f for f, _ in nfe]))
        row["nfe_backward"] = float(np.median([b for _, b in nfe]))
    return row


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--models", default="odenet,rknet,resnet", help="models to time")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--tol", type=float, default=1e-3, help="ODE-Net rtol = atol")
    parser.add_argument("--method", default="adams", help="ODE-Net method")
    parser.add_argument("--out", default="results/benchmarks/mnist_step.json", help="JSON out")
    args = parser.parse_args(argv)
    rows = [step_times(m, args.steps, args.batch, args.tol, args.method)
            for m in args.models.split(",")]
    print(markdown_table(rows, ["model", "step_s_median", "step_s_min", "nfe_forward",
                                "nfe_backward", "batch"]))
    path = write_json(args.out, {"benchmark": "B2 mnist-odenet-step", "machine": machine(),
                                 "args": vars(args), "rows": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
