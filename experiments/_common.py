"""Helpers shared by the experiment and benchmark scripts."""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    """Names the machine a result was measured on: CPU model, cores, GPU if any."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = []
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # noqa: BLE001 - informational only
        pass
    import numpy
    import scipy

    info = {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "python": platform.python_version(),
            "numpy": numpy.__version__, "scipy": scipy.__version__}
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) != os.cpu_count():
        info["cores_used"] = sorted(os.sched_getaffinity(0))  # pinned (taskset)
    threads = {k: os.environ[k] for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                          "OMP_NUM_THREADS") if k in os.environ}
    if threads:
        info["thread_settings"] = threads
    try:
        import keras
        import tensorflow as tf

        info.update(tensorflow=tf.__version__, keras=keras.__version__)
    except ImportError:
        pass
    return info


def single_thread_tf() -> None:
    """Pins TensorFlow to one intra-op and one inter-op thread (call before any op)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised
        pass


def add_threads_argument(parser) -> None:
    """The benchmarks' ``--threads``: TensorFlow's defaults (as users run) or one
    intra- and one inter-op thread."""
    parser.add_argument("--threads", default="default", choices=["default", "one"],
                        help="TensorFlow threads: its defaults, or one intra- and inter-op")


def tf_threads_label(choice: str) -> str:
    """How a ``--threads`` choice is recorded in a benchmark's JSON."""
    return "one intra-op, one inter-op" if choice == "one" else "TensorFlow's defaults"


def per_call_ms(fn, repeats: int = 10) -> float:
    """Milliseconds per call of ``fn()``: one warm-up call, then the mean of ``repeats``."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1e3 * (time.perf_counter() - start) / repeats


def eval_cost_rows(cb, y, a, func, x, w, t, repeats: int) -> list[dict]:
    """Milliseconds per dynamics evaluation and per vector-Jacobian product as each
    solver sees them, tfode's first, PyTorch's second: tfode's compiled NumPy callbacks
    ``cb`` at the flat float64 state ``y`` and cotangent ``a``; the PyTorch module
    ``func`` at ``(t, x)`` with cotangent ``w``, by ``autograd.grad`` with respect to the
    state and the parameters."""
    import torch

    params = list(func.parameters())

    def forward():
        with torch.no_grad():
            func(t, x)

    def vjp():
        xx = x.detach().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(func(t, xx), [xx, *params], w)

    return [{"side": f"tfode (XLA {'on' if cb.jit else 'off'})",
             "f_ms": per_call_ms(lambda: cb.fun(0.0, y), repeats),
             "vjp_ms": per_call_ms(lambda: cb.vjp(0.0, y, a), repeats)},
            {"side": "PyTorch", "f_ms": per_call_ms(forward, repeats),
             "vjp_ms": per_call_ms(vjp, repeats)}]


def eval_bound_s(row: dict, cost: dict) -> float:
    """A solve's evaluations priced at measured per-call costs (``cost``: ``f_ms`` and
    ``vjp_ms``): forward NFE x f + backward NFE x VJP, the time it would take if the
    solver and the framework cost nothing else."""
    return 1e-3 * (row["nfe_forward"] * cost["f_ms"]
                   + (row["nfe_backward"] or 0) * cost["vjp_ms"])


def write_json(path: str | Path, payload: dict) -> Path:
    """Writes ``payload`` as indented JSON, creating the folder; atomically (a file
    beside it, then renamed), so a run killed while writing leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=float) + "\n"
    return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def merge_table(stem: str | Path, new: list[dict], key: tuple[str, ...],
                columns: list[str]) -> list[dict]:
    """Merges ``new`` into the table ``stem.json`` (none if it does not exist) and writes
    it again as ``stem.json``, ``stem.md`` and ``stem.csv``: a new record replaces, in
    its place, the old one with the same values of the ``key`` fields, and is appended
    where there is none. So an evaluation of some of a folder's rows adds to that
    folder's table instead of erasing the rest of it. Returns the merged records."""
    path = Path(stem).with_suffix(".json")
    merged = json.loads(path.read_text()) if path.exists() else []
    where = {tuple(r.get(k) for k in key): i for i, r in enumerate(merged)}
    for r in new:
        k = tuple(r.get(f) for f in key)
        if k in where:
            merged[where[k]] = r
        else:
            where[k] = len(merged)
            merged.append(r)
    write_json(path, merged)
    write_table(stem, merged, columns)
    return merged


def replace_atomically(path: str | Path, write) -> Path:
    """Calls ``write(tmp)`` on a temporary path beside ``path``, then renames it to
    ``path`` (an atomic replacement on one file system)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, tuple)):
            return ", ".join(fmt(x) for x in v)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def json_from_fresh_process(module: str, args: list[str], what: str, env: dict | None = None,
                            timeout: float = 3600) -> dict:
    """Runs ``python -m module *args`` in a fresh process (a measurement that must not
    share a process with others: memory, threads) and returns the JSON object on its
    last stdout line that starts with ``{``; raises naming ``what`` with the tail of its
    stderr if it failed."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def script_parser(doc: str):
    """The argument parser of an experiment script: its docstring's first paragraph as
    the description, defaults shown in ``--help``."""
    import argparse

    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def pyplot():
    """matplotlib's pyplot with the Agg backend (set once, before pyplot is first
    imported): every experiment's figures are PNG files, never windows."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110):
    """Lays out, writes (PNG, Agg backend) and closes a matplotlib figure."""
    plt = pyplot()

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def finish(out: Path, summary: dict, start: float) -> dict:
    """Ends an experiment: records its wall time (since ``start``, a
    ``time.perf_counter()`` value) and writes ``out/results.json``."""
    import time

    summary["wall_s"] = time.perf_counter() - start
    write_json(Path(out) / "results.json", summary)
    print(f"wrote {out}/results.json and the tables and figures beside it")
    return summary


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a CSV file as dictionaries."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def write_table(stem: Path, rows: list[dict], columns: list[str]) -> str:
    """Prints ``rows`` as a markdown table and writes it as ``stem.md`` and ``stem.csv``."""
    table = markdown_table(rows, columns)
    print("\n" + table)
    stem = Path(stem)
    stem.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return table


def fit(loss_fn, variables, optimizer, iters: int, label: str, data=None, log_every: int = 0,
        stats=None, checkpoint: str | Path | None = None, checkpoint_every: int = 25,
        resume: bool = False, time_limit: float | None = None, evaluate=None,
        evaluate_every: int = 0, history_every: int = 1) -> list[dict]:
    """The training loop of the experiments that train by iterations: one compiled
    step per iteration, a Keras progress bar, a history row per iteration, and
    optional checkpoints to resume from.

    Args:
        loss_fn: ``loss_fn(batch) -> scalar``; ``batch`` is ``data(i)`` (an array or
            a tuple of arrays for iteration ``i``, counted from 0) or None.
        variables: The variables to train.
        optimizer: A Keras optimizer.
        iters: Number of steps.
        label: Printed before the bar; also names the run in its checkpoint.
        data: Optional callable ``data(i)`` returning the batch of iteration ``i``. A
            batch that depends on ``i`` alone (a generator seeded with it) makes a
            resumed run bitwise the uninterrupted one.
        log_every: Update the bar every this many steps (0: every step).
        stats: Optional :class:`tfode.SolveStats` of the model's solve: its forward
            and backward evaluations are added to each history row and to the bar.
        checkpoint: Optional ``.npz`` path: every ``checkpoint_every`` iterations
            (and at the end) the variables, the optimizer's state and the history
            are written there (atomically).
        checkpoint_every: Iterations between checkpoints.
        resume: Continue from ``checkpoint`` if it exists (it must come from a run
            of the same ``label`` and variable shapes).
        time_limit: Optional training seconds (over every resumed part): no step
            starts once they are spent, so ``iters`` is then the most. Such a run
            stops where the machine's speed says, not bitwise where another's would.
        evaluate: Optional ``evaluate() -> dict`` run after every ``evaluate_every``-th
            iteration (a learning curve on held-out data); its entries join that
            iteration's history row. Its time is not training time.
        history_every: Keep one history row in this many iterations (and the rows of
            evaluations and the last one): a long run's history, and its checkpoint,
            stay small.

    Returns:
        One dict per kept iteration: ``iteration``, ``loss``, ``wall_s`` (training
        seconds so far, over every resumed part) (and ``nfe_forward``, ``nfe_backward``
        with ``stats``). The last row is the last iteration run.
    """
    import time

    import keras
    import tensorflow as tf

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    history, row = [], None  # row: the last iteration run
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        optimizer.build(variables)
        if resume and checkpoint.exists():
            history, row = _restore(checkpoint, label, variables, optimizer)
            print(f"-- {label}: resumed from {checkpoint} at iteration {row['iteration']}",
                  flush=True)
    done, done_s = (row["iteration"], row["wall_s"]) if row else (0, 0.0)
    names = ["loss"] + (["nfe_f", "nfe_b"] if stats is not None else [])
    bar = keras.utils.Progbar(iters, stateful_metrics=names, verbose=1 if iters > 1 else 0)
    print(f"-- {label}", flush=True)
    start = time.perf_counter()
    for i in range(done, iters):
        if time_limit is not None and done_s + time.perf_counter() - start >= time_limit:
            if checkpoint is not None and row is not None:
                _save(checkpoint, label, variables, optimizer, history, row)
            bar.update(i, [("loss", row["loss"])] if row else None, finalize=True)
            print(f"-- {label}: stopped after {i} iterations, its {time_limit:.0f} s spent",
                  flush=True)
            break
        batch = None if data is None else tf.nest.map_structure(tf.constant, data(i))
        row = {"iteration": i + 1, "loss": float(step(batch)),
               "wall_s": done_s + time.perf_counter() - start}
        if stats is not None:
            nfe = stats.as_dict()
            row.update(nfe_forward=nfe["nfe_forward"], nfe_backward=nfe["nfe_backward"])
        evaluated = evaluate is not None and evaluate_every and (i + 1) % evaluate_every == 0
        if evaluated:
            spent = time.perf_counter()
            row.update(evaluate())
            start += time.perf_counter() - spent  # not training time
        if evaluated or (i + 1) % history_every == 0 or i + 1 == iters:
            history.append(row)
        if log_every == 0 or (i + 1) % log_every == 0 or i + 1 == iters:
            shown = [("loss", row["loss"])]
            if stats is not None:
                shown += [("nfe_f", row["nfe_forward"]), ("nfe_b", row["nfe_backward"])]
            bar.update(i + 1, shown)
        if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == iters):
            _save(checkpoint, label, variables, optimizer, history, row)
    if row is not None and (not history or history[-1] is not row):
        history.append(row)  # a run stopped by its time limit ends on its last iteration
    return history


def _save(path: Path, label: str, variables, optimizer, history: list[dict],
          last: dict) -> None:
    """Writes a checkpoint: the variables, the optimizer's state, and the history and
    ``last`` (the row of the last iteration run, kept in the history or not) as one
    compressed column per key, with a mask where some rows lack the key."""
    import numpy as np

    arrays = {f"var{k}": v.numpy() for k, v in enumerate(variables)}
    arrays.update({f"opt{k}": v.numpy() for k, v in enumerate(optimizer.variables)})
    rows = history if history and history[-1] is last else history + [last]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        present = np.array([key in row for row in rows])
        arrays[f"hist:{key}"] = np.array([row.get(key, 0) for row in rows])
        if not present.all():
            arrays[f"histmask:{key}"] = present
    arrays["meta"] = json.dumps({"label": label, "format": 2, "history_keys": keys,
                                 "last_kept": rows is history})

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, write)


def checkpoint_iteration(path: str | Path) -> int:
    """The last iteration that a checkpoint of :func:`fit` holds."""
    import numpy as np

    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        if "history" in meta:  # the older format
            return int(meta["history"][-1]["iteration"])
        return int(saved["hist:iteration"][-1])


def restore_variables(path: str | Path, variables) -> int:
    """Loads the variables of a :func:`fit` checkpoint into ``variables`` (the same
    list, in the same order, as the run trained) without an optimizer, to evaluate a
    trained model; returns the iteration the checkpoint holds."""
    import numpy as np

    with np.load(path) as saved:
        shapes = _saved_shapes(saved)
        if shapes != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"The checkpoint {path} holds variables of shapes {shapes}, not those of this "
                f"model ({[tuple(v.shape) for v in variables]}): it is another model's.")
        _assign(saved, "var", variables)
    return checkpoint_iteration(path)


def _saved_shapes(saved) -> list[tuple]:
    """The shapes of the model variables a checkpoint of :func:`_save` holds, in order."""
    return [saved[f"var{k}"].shape for k in range(sum(f.startswith("var") for f in saved.files))]


def _assign(saved, prefix: str, variables) -> None:
    """Assigns a checkpoint's arrays ``{prefix}0``, ``{prefix}1``, ... to ``variables``."""
    for k, v in enumerate(variables):
        v.assign(saved[f"{prefix}{k}"])


def _restore(path: Path, label: str, variables, optimizer) -> tuple[list[dict], dict]:
    """Loads a checkpoint of :func:`_save` (or of the older format, whose history was
    JSON) into ``variables`` and ``optimizer``; returns the history and the row of the
    last iteration run."""
    import numpy as np

    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        shapes = _saved_shapes(saved)
        if meta["label"] != label or shapes != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"The checkpoint {path} is of another run ({meta['label']!r}, variable "
                f"shapes {shapes}), not of {label!r}; delete it or run without --resume.")
        _assign(saved, "var", variables)
        _assign(saved, "opt", optimizer.variables)
        if "history" in meta:  # the older format: one JSON row per iteration
            return meta["history"], meta["history"][-1]
        columns = {key: saved[f"hist:{key}"].tolist() for key in meta["history_keys"]}
        masks = {key: saved[f"histmask:{key}"].tolist() for key in meta["history_keys"]
                 if f"histmask:{key}" in saved}
    n = len(next(iter(columns.values()))) if columns else 0
    history = [{key: col[j] for key, col in columns.items() if masks.get(key, [True] * n)[j]}
               for j in range(n)]
    return (history, history[-1]) if meta["last_kept"] else (history[:-1], history[-1])


def single_thread_all() -> None:
    """TensorFlow and PyTorch on one thread each (the comparison's setting)."""
    import torch

    single_thread_tf()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
