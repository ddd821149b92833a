"""B3 of the comparison: peak memory of one gradient against the integration length,
each point in a fresh process. Run through ``python -m experiments.compare --parts b3``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from experiments._common import json_from_fresh_process, pyplot, save_figure, single_thread_all
from experiments.compare_b2 import B2

MEMORY_SIDES = ("tfode_adjoint", "torch_odeint", "torch_adjoint")



def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="utf-8") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def memory_one(side: str, length: int, batch: int) -> dict:
    """Peak resident memory of one gradient on ``[0, length]``, and its growth over the
    level before it. A warm-up gradient on ``[0, 1]`` first loads the frameworks'
    kernels and allocators; a thread then samples the resident size every
    millisecond during the measured gradient (the frameworks release the GIL while
    they compute)."""
    import threading

    single_thread_all()
    problem = B2(batch=batch)
    sides = {"tfode_adjoint": lambda t_end: problem.tfode("adams", t_end=t_end),
             "torch_odeint": lambda t_end: problem.torch(adjoint=False, t_end=t_end),
             "torch_adjoint": lambda t_end: problem.torch(adjoint=True, t_end=t_end)}
    sides[side](1.0)(1e-3)
    step = sides[side](float(length))
    before = _rss_mib()
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    r = step(1e-3)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mib())
    return {"side": side, "length": length, "batch": batch, "rss_before_mib": before,
            "peak_rss_mib": peak[0], "peak_growth_mib": peak[0] - before,
            "nfe_forward": r["nfe_forward"], "nfe_backward": r["nfe_backward"]}


def b3(args, out: Path) -> tuple[list[dict], Path]:
    rows = []
    for side in MEMORY_SIDES:
        for length in args.lengths:
            rows.append(json_from_fresh_process(
                "experiments.compare", ["--memory-one", side, str(length), str(args.b3_batch)],
                f"memory run {side} T={length}"))
            print(f"  B3 {side} T={length}: peak {rows[-1]['peak_rss_mib']:.0f} MiB "
                  f"(+{rows[-1]['peak_growth_mib']:.1f})", flush=True)
    for side in MEMORY_SIDES:
        mine = [r for r in rows if r["side"] == side]
        for r in mine:
            r["peak_ratio_to_first"] = r["peak_rss_mib"] / mine[0]["peak_rss_mib"]
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"tfode_adjoint": "tfode adjoint (Adams)",
              "torch_odeint": "torchdiffeq odeint (backprop)",
              "torch_adjoint": "torchdiffeq odeint_adjoint"}
    for side in MEMORY_SIDES:
        pts = [(r["length"], r["peak_rss_mib"]) for r in rows if r["side"] == side]
        ax.plot(*zip(*pts), "o-", label=labels[side])
    ax.set(xscale="log", xlabel="integration length T",
           ylabel="peak resident memory during one gradient (MiB)",
           title=f"B3: MNIST ODE function, batch {args.b3_batch}")
    ax.legend(fontsize=8)
    return rows, save_figure(fig, out / "memory.png")
