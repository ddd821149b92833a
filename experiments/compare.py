"""tfode beside torchdiffeq and autograd's odeint: the same dynamics, the same weights.

Needs the optional ``compare`` extra (torch, torchdiffeq). Benchmarks of
B1-B3 and Figure 3c, every side measured in this run on this machine, with
TensorFlow and PyTorch pinned to one thread each (and NumPy's BLAS to one), or
with ``--threads default`` each library's own default thread pools, as users run:

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
import sys
import time
from pathlib import Path

# BLAS and OpenMP read their thread counts when first loaded, before argparse runs.
_DEFAULT_THREADS = "--threads=default" in sys.argv or (
    "--threads" in sys.argv[:-1] and sys.argv[sys.argv.index("--threads") + 1] == "default")
if not _DEFAULT_THREADS:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from experiments._common import (  # noqa: E402
    finish,
    machine,
    script_parser,
    single_thread_all,
    write_table,
)
from experiments.compare_b1 import B1, b1  # noqa: E402, F401
from experiments.compare_b2 import B2, b2, figure3c  # noqa: E402, F401
from experiments.compare_b3 import b3, memory_one  # noqa: E402


def _floats(text):
    return [float(v) for v in text.split(",") if v]


def _default_threads(torch) -> str:
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads() or "TensorFlow's default"
    inter = tf.config.threading.get_inter_op_parallelism_threads() or "TensorFlow's default"
    return (f"defaults: TensorFlow intra {intra}, inter {inter}; PyTorch "
            f"{torch.get_num_threads()} intra, {torch.get_num_interop_threads()} inter; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


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
    parser.add_argument("--threads", default="one", choices=["one", "default"],
                        help="one thread each for TensorFlow, PyTorch and BLAS, or each "
                             "library's defaults (as users run)")
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
    if args.threads == "one":
        single_thread_all()
    import torch
    import torchdiffeq

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    summary = {"experiment": "compare", "args": vars(args), "machine": machine(),
               "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
               "threads": ("1 (TensorFlow intra/inter, PyTorch, BLAS)" if args.threads == "one"
                           else _default_threads(torch))}
    start = time.perf_counter()
    if "b1" in parts:
        agreement, cost, evals = b1(args)
        summary["b1_agreement"], summary["b1_cost"] = agreement, cost
        summary["b1_eval_costs"] = evals
        write_table(out / "b1_agreement", agreement,
                    ["implementation", "y0", "tol", "values", "grad_y0", "grad_params", "grad_t",
                     "nfe_forward", "nfe_backward"])
        write_table(out / "b1_cost", cost,
                    ["implementation", "y0", "tol", "forward_s", "backward_s", "total_s",
                     "nfe_forward", "nfe_backward", "grad_rel_error",
                     "time_vs_torchdiffeq_adjoint", "eval_bound_s",
                     "eval_bound_vs_torchdiffeq_adjoint"])
        write_table(out / "b1_eval_costs", evals, ["side", "y0", "f_ms", "vjp_ms"])
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
