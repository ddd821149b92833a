"""Latent ODEs on irregularly sampled spirals (Section 5, Table 2, Figures 7 and 8).

1. Table 2: bidirectional 2-D spirals (``experiments/latent_data.py``), each observed
   at n in {30, 50, 100} irregular times of a 100-point window; every model predicts
   the 100 points after the window, and the test RMSE against the noise-free spiral
   is reported for each n, at several noise levels, beside the paper's numbers.
   Models: the latent ODE (``tfode.latent.LatentODE``: RNN encoder of 25 units run
   backward over observations and time gaps, 4-d latent, dynamics and decoder with
   one hidden layer of 20 units, trained on the ELBO), an RNN of 25 units trained
   on the Gaussian negative log-likelihood of the next observation, and the same RNN
   with the time gap to the next observation as an extra input.
2. Figure 8: reconstructions and extrapolations of test spirals (RNN against latent
   ODE) and latent trajectories.
3. Figure 7: a latent ODE with an intensity network fitted to a toy inhomogeneous
   Poisson process by the ELBO of the Poisson process likelihood, the integral of the
   intensity solved as an extra state; the learned intensity against the events.

The paper's tolerance (SciPy odeint's 1.49e-8, LSODA) is the default; ``--tol``
loosens it. ``--quick`` is a CPU run (about 20 minutes on two cores): fewer
iterations, minibatches of 100 and tolerance 1e-5.

    python -m experiments.latent_ode --quick
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from experiments._common import (  # noqa: E402
    checkpoint_iteration,
    finish,
    fit,
    machine,
    merge_table,
    pyplot,
    read_csv,
    restore_variables,
    save_figure,
    script_parser,
    write_json,
    write_table,
)
from experiments.latent_data import (  # noqa: E402
    TRAIN_STARTS,
    poisson_events,
    rmse,
    spirals,
    subsample,
)

#: Table 2 of the paper: predictive RMSE on the test set.
PAPER_TABLE2 = {"RNN": {30: 0.3937, 50: 0.3202, 100: 0.1813},
                "Latent ODE": {30: 0.1642, 50: 0.1502, 100: 0.1346}}
PAPER_STYLES = {"Latent ODE": "--", "RNN": ":"}  # the paper's rows in learning_curves.png
MODELS = {"latent_ode": "Latent ODE", "rnn": "RNN", "rnn_dt": "RNN + time gaps"}


def build_rnn(time_input: bool, units: int = 25, obs_dim: int = 2, cell: str = "rnn"):
    """The RNN baselines: a tanh RNN of ``units`` whose head gives the mean and log
    standard deviation of the next observation; with ``time_input`` the gap to the
    next observation is concatenated to each input. ``cell`` is ``rnn`` (the tanh
    cell) or ``gru``."""
    import keras
    import tensorflow as tf

    from tfode.latent import gaussian_log_prob

    cells = {"rnn": keras.layers.SimpleRNNCell, "gru": keras.layers.GRUCell}
    if cell not in cells:
        raise ValueError(f"Unknown RNN cell {cell!r}; choose 'rnn' or 'gru'.")

    class RNNBaseline(keras.Model):
        def __init__(self):
            super().__init__(dtype="float64")
            self.cell = cells[cell](units, dtype="float64")
            self.rnn = keras.layers.RNN(self.cell, return_sequences=True, return_state=True,
                                        dtype="float64")
            self.head = keras.layers.Dense(2 * obs_dim, dtype="float64")
            width = obs_dim + int(time_input)
            self.rnn.build((None, None, width))
            self.head.build((None, units))

        def _inputs(self, x, gaps):
            return tf.concat([x, gaps[..., None]], -1) if time_input else x

        def nll(self, x, t):
            """Mean Gaussian NLL of each next observation given the ones before."""
            seq, _ = self.rnn(self._inputs(x[:, :-1], t[:, 1:] - t[:, :-1]))
            mean, log_std = tf.split(self.head(seq), 2, -1)
            return -tf.reduce_mean(tf.reduce_sum(
                gaussian_log_prob(x[:, 1:], mean, tf.exp(log_std)), -1))

        def predict_path(self, x, t, times):
            """One-step predictions over the observations (``[B, n-1, D]``, each at
            the next observation's time) and a rollout at the future ``times``
            (``[B, len(times), D]``), feeding back its own mean predictions."""
            gaps = tf.concat([t[:, 1:] - t[:, :-1], times[0] - t[:, -1:]], 1)
            seq, h = self.rnn(self._inputs(x, gaps))
            means = tf.split(self.head(seq), 2, -1)[0]
            step = tf.fill(tf.shape(x[:, :1, 0]), times[1] - times[0])
            pred, outputs = means[:, -1], [means[:, -1]]
            for _ in range(len(times) - 1):
                out, h = self.cell(self._inputs(pred[:, None], step)[:, 0], h)
                pred = tf.split(self.head(out), 2, -1)[0]
                outputs.append(pred)
            return means[:, :-1], tf.stack(outputs, 1)

    return RNNBaseline()


def solver_label(kind: str, args) -> str:
    """How a model was trained: the latent ODE's solver and gradient; for the RNNs
    ``-`` (the paper's tanh cell) or the cell's name."""
    if kind != "latent_ode":
        cell = getattr(args, "rnn_cell", "rnn")
        return "-" if cell == "rnn" else f"{cell.upper()} cell"
    import tfode

    way = "backpropagated" if tfode.methods()[args.method]["in_graph"] else "adjoint"
    decay = ", cosine lr" if getattr(args, "lr_decay", "none") == "cosine" else ""
    layers = getattr(args, "dynamics_layers", 1)
    deeper = f", {layers}-layer dynamics" if layers != 1 else ""
    return f"{args.method} {args.tol:.3g} ({way}){decay}{deeper}"


def is_variant(solver: str) -> bool:
    """Whether a latent ODE row's label names a departure from the paper's setting
    (a learning rate schedule, deeper dynamics): such rows stay out of the headline."""
    return solver.partition(")")[2] != ""


def _stem(kind: str, noise: float, n: int, seed: int, args) -> str:
    """The name of a run's files (history, predictions, checkpoint)."""
    stem = f"{kind}_noise{noise:g}_n{n}" + (f"_seed{seed}" if seed else "")
    if kind == "latent_ode":
        stem += f"_{args.method}" if args.method != "odeint" else ""
        stem += "_cosine" if getattr(args, "lr_decay", "none") == "cosine" else ""
        layers = getattr(args, "dynamics_layers", 1)
        return stem + (f"_dyn{layers}" if layers != 1 else "")
    cell = getattr(args, "rnn_cell", "rnn")
    return stem + (f"_{cell}" if cell != "rnn" else "")


def _done_key(noise: float, n: int, model: str, seed: int, solver: str) -> str:
    return f"{model}/noise={noise:g}/n={n}/seed={seed}/{solver}"


def _row_key(r: dict) -> str:
    return _done_key(r["noise"], r["n"], r["key"], r.get("seed", 0), r.get("solver", "-"))


def _optimizer(kind: str, args):
    """Adam at ``--lr`` for the latent ODE (the paper's; with ``--lr-decay cosine``
    decayed to 1% of it at the last iteration); for the RNNs from ``--rnn-lr`` with
    ``--rnn-decay cosine`` to 1% of it at the last iteration, gradients clipped to norm
    ``--rnn-clipnorm``."""
    import keras

    if kind == "latent_ode":
        if getattr(args, "lr_decay", "none") == "cosine":
            return keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(args.lr, args.iters, alpha=0.01))
        return keras.optimizers.Adam(args.lr)
    lr = args.rnn_lr
    if args.rnn_decay == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, args.rnn_iters, alpha=0.01)
    return keras.optimizers.Adam(lr, clipnorm=args.rnn_clipnorm or None)


def latent_model(noise: float, args):
    """The Table 2 latent ODE as ``args`` trains it, its observation model's standard
    deviation the data's noise."""
    from tfode.latent import LatentODE

    return LatentODE(obs_std=noise, method=args.method, rtol=args.tol, atol=args.tol,
                     dynamics_layers=getattr(args, "dynamics_layers", 1))


def observed(data, idx) -> tuple[np.ndarray, np.ndarray]:
    """Every spiral's noisy observations ``[spirals, n, 2]`` at the window indices
    ``idx`` (``[spirals, n]``, from :func:`subsample`) and their times ``[spirals, n]``."""
    return np.take_along_axis(data.noisy[:, :data.n_obs], idx[..., None], 1), data.t[idx]


def elbo_loss(model, x, t, seed):
    """The latent ODE's training loss: the negative mean ELBO of the batch ``(x, t)``,
    its reparameterisation draw from the stateless ``seed``."""
    import tensorflow as tf

    return -tf.reduce_mean(model.elbo(x, t, seed=seed))


def train_spiral_model(kind: str, data, idx, args, out: Path, seed: int = 0) -> dict:
    """Trains one Table 2 model on one (noise, n) setting from training seed ``seed``
    and evaluates it."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    n_tr, n_obs = data.n_train, data.n_obs
    x_all, t_all = observed(data, idx)
    batch = min(args.batch, n_tr)
    stem = _stem(kind, data.noise_std, idx.shape[1], seed, args)

    def draw(i):
        """Iteration ``i``'s batch and reparameterisation seed, from ``(seed, i)`` alone
        (so that a resumed run is bitwise the uninterrupted one)."""
        rng = np.random.default_rng([seed, i])
        pick = rng.choice(n_tr, batch, replace=False) if batch < n_tr else np.arange(n_tr)
        return x_all[pick], t_all[pick], np.array([seed, i], np.int64)

    stats = None
    if kind == "latent_ode":
        model = latent_model(data.noise_std, args)
        stats = model.stats

        def loss_fn(b):
            return elbo_loss(model, *b)
    else:
        model = build_rnn(time_input=kind == "rnn_dt", cell=args.rnn_cell)

        def loss_fn(b):
            return model.nll(b[0], b[1])

    iters = args.iters if kind == "latent_ode" else args.rnn_iters
    label = f"{MODELS[kind]}, noise {data.noise_std:g}, n = {idx.shape[1]}"
    test = slice(n_tr, None)
    x_te, t_te = tf.constant(x_all[test]), tf.constant(t_all[test])
    future = data.t[n_obs:]

    def extrapolate():
        """The test spirals' reconstructions, extrapolations and latent paths."""
        if kind == "latent_ode":
            path, z = model.predict_path(x_te, t_te, tf.constant(data.t))
            path = path.numpy()
            return path[:, :n_obs], path[:, n_obs:], z.numpy()
        recon, extrap = (a.numpy() for a in model.predict_path(x_te, t_te,
                                                              tf.constant(future)))
        return recon, extrap, None

    def learning_curve():
        return {"test_rmse": rmse(extrapolate()[1], data.clean[test][:, n_obs:])}

    history = fit(loss_fn, model.trainable_variables, _optimizer(kind, args),
                  iters, label, data=draw, log_every=max(1, iters // 50), stats=stats,
                  checkpoint=out / f"checkpoint_{stem}.npz", resume=args.resume,
                  evaluate=learning_curve, evaluate_every=args.curve_every)
    train_s = history[-1]["wall_s"]

    recon, extrap, z = extrapolate()
    clean, noisy = data.clean[test], data.noisy[test]
    truth = clean[:, n_obs:]
    quarters = np.array_split(np.arange(truth.shape[1]), 4)
    row = {"model": MODELS[kind], "key": kind, "noise": data.noise_std, "n": idx.shape[1],
           "seed": seed, "solver": solver_label(kind, args), "rmse": rmse(extrap, truth),
           "rmse_vs_noisy": rmse(extrap, noisy[:, n_obs:]),
           # How the error grows along the extrapolation: each quarter of the future.
           "rmse_by_quarter": [rmse(extrap[:, q], truth[:, q]) for q in quarters],
           # Future points on stretches of the curve that no training window covers.
           **_seen_unseen(extrap, truth, data.unseen_future()[test]),
           "train_starts": data.train_starts, "history": f"history_{stem}.csv",
           "iterations": iters, "batch": batch, "train_s": train_s,
           "final_loss": history[-1]["loss"], "rmse_tail": curve_tail(history)}
    if data.train_starts != "shared":
        # The same split by the default range's windows (the test spirals are the same):
        # how the wider training does on the stretches the default already covered.
        default = spirals(noise_std=data.noise_std, seed=args.data_seed)
        assert np.array_equal(default.clean[test], clean)
        split = _seen_unseen(extrap, truth, default.unseen_future()[test])
        row.update(rmse_default_seen=split["rmse_seen"],
                   rmse_default_unseen=split["rmse_unseen"])
    if kind == "latent_ode":  # its path over the whole observed window, noise-free truth
        row["rmse_recon"] = rmse(recon, clean[:, :n_obs])
    if kind != "latent_ode":
        row.update(rnn_lr=args.rnn_lr, rnn_decay=args.rnn_decay,
                   rnn_clipnorm=args.rnn_clipnorm)
    if stats is not None:
        tail = history[-max(1, len(history) // 10):]
        backward = stats.backward_info
        row.update(tol=args.tol, method=args.method,
                   backward_method=None if backward is None else backward.method,
                   nfe_forward=float(np.mean([h["nfe_forward"] for h in tail])),
                   nfe_backward=float(np.mean([h["nfe_backward"] for h in tail])))
    with open(out / f"history_{stem}.csv", "w", encoding="utf-8") as fh:
        keys = list(dict.fromkeys(k for h in history for k in h))  # test_rmse: some rows
        fh.write(",".join(keys) + "\n")
        fh.writelines(",".join(str(h.get(k, "")) for k in keys) + "\n" for h in history)
    keep = slice(0, args.figure_spirals)
    np.savez(out / f"pred_{stem}.npz", recon=recon[keep], extrap=extrap[keep],
             obs_index=idx[test][keep], z=np.zeros(0) if z is None else z[:, keep])
    return row


def curve_tail(history: list[dict], share: float = 0.1) -> float | None:
    """The mean test RMSE of the learning curve's points in the last ``share`` of the
    iterations (``None`` without such points).

    Under a constant learning rate the final iterate's RMSE moves from one curve point
    to the next; this mean says where the curve has settled.
    """
    last = history[-1]["iteration"]
    points = [h["test_rmse"] for h in history
              if "test_rmse" in h and h["iteration"] > (1.0 - share) * last]
    return float(np.mean(points)) if points else None


def fit_z0(model, z0, times, targets, index, std: float, steps: int = 600,
           lr: float = 0.02):
    """The mode of ``p(z0 | targets)`` under a trained latent ODE, found by Adam from
    ``z0``: the Gaussian likelihood (standard deviation ``std``) of ``targets``
    (``[batch, k, obs_dim]``, observed at ``times[index]``; ``times`` 1-D and
    increasing, ``index`` ``[batch, k]``) with the ``N(0, I)`` prior. The model's
    weights stay fixed. Returns the fitted ``z0``, ``[batch, latent_dim]``."""
    import keras
    import tensorflow as tf

    from tfode.latent import gaussian_log_prob

    z0 = tf.Variable(tf.convert_to_tensor(z0, model.compute_dtype))
    times = tf.constant(times, tf.float64)
    targets = tf.constant(targets, model.compute_dtype)
    index = tf.constant(index)
    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            path = tf.transpose(model.decoder(model.latent_trajectory(z0, times)), [1, 0, 2])
            fitted = tf.gather(path, index, batch_dims=1)
            loss = (-tf.reduce_sum(gaussian_log_prob(targets, fitted, std))
                    + 0.5 * tf.reduce_sum(tf.square(z0)))
        optimizer.apply_gradients([(tape.gradient(loss, z0), z0)])

    for _ in range(steps):
        step()
    return z0.numpy()


def z0_split(model, data, idx, steps: int = 600, lr: float = 0.02) -> dict:
    """Splits a trained latent ODE's extrapolation error on the test spirals between
    its encoder and its dynamics, by the test RMSE on the future points from three
    initial states:

    * ``encoder``: the encoder's posterior mean (how Table 2 is measured);
    * ``fitted``: ``z0`` fitted to the same noisy observations (:func:`fit_z0`), what
      a perfect encoder could give with these dynamics and this decoder;
    * ``oracle``: ``z0`` fitted to the noise-free window and future together, the
      best that any initial state gives with these dynamics and this decoder.

    Each has its RMSE over the future (``*_rmse``), per quarter of it
    (``*_by_quarter``) and over the observed window (``*_window``)."""
    import tensorflow as tf

    n_tr, n_obs = data.n_train, data.n_obs
    test = slice(n_tr, None)
    x, t = (a[test] for a in observed(data, idx))
    clean = data.clean[test]
    times = tf.constant(data.t)
    mean, _ = model.encode(tf.constant(x), tf.constant(t))
    everything = np.broadcast_to(np.arange(len(data.t)), clean.shape[:2])
    initial_states = {
        "encoder": mean.numpy(),
        "fitted": fit_z0(model, mean, data.t, x, idx[test], data.noise_std, steps, lr),
        "oracle": fit_z0(model, mean, data.t, clean, everything, data.noise_std, steps, lr)}
    quarters = np.array_split(np.arange(n_obs, len(data.t)), 4)
    row = {}
    for name, z0 in initial_states.items():
        path = model.predict_path(None, None, times, z0=tf.constant(z0))[0].numpy()
        row[f"{name}_rmse"] = rmse(path[:, n_obs:], clean[:, n_obs:])
        row[f"{name}_by_quarter"] = [rmse(path[:, q], clean[:, q]) for q in quarters]
        row[f"{name}_window"] = rmse(path[:, :n_obs], clean[:, :n_obs])
    return row


def _recorded_models(args, out: Path, flag: str):
    """Yields ``(row, model, data, idx)`` for every recorded latent ODE row of the asked
    settings (noise levels, n, seeds, solver, ``--iters``, ``--train-starts``), the
    model loaded from its final checkpoint; ``flag`` names the option in errors."""
    rows_path = out / "rows.json"
    if not rows_path.exists():
        raise FileNotFoundError(f"{flag} evaluates recorded rows: {rows_path} does not "
                                "exist; train the models first.")
    solver = solver_label("latent_ode", args)
    recorded = [r for r in json.loads(rows_path.read_text())
                if r["key"] == "latent_ode" and r.get("solver") == solver
                and r["noise"] in args.noise and r["n"] in args.n_obs
                and r.get("seed", 0) in args.seeds and r["iterations"] == args.iters
                and r.get("train_starts", "shared") == args.train_starts]
    if not recorded:
        raise ValueError(f"{flag}: no recorded latent ODE row in {rows_path} trained with "
                         f"{solver} for {args.iters} iterations at noise {args.noise}, n "
                         f"{args.n_obs}, seeds {args.seeds}.")
    for r in sorted(recorded, key=lambda r: (r["noise"], r["n"], r.get("seed", 0))):
        seed = r.get("seed", 0)
        path = out / f"checkpoint_{_stem('latent_ode', r['noise'], r['n'], seed, args)}.npz"
        model = latent_model(r["noise"], args)
        held = restore_variables(path, model.trainable_variables)
        if held != r["iterations"]:
            print(f"-- noise {r['noise']:g}, n = {r['n']}, seed {seed}: left out, {path.name} "
                  f"holds iteration {held}, not the recorded row's {r['iterations']}")
            continue
        data = spirals(noise_std=r["noise"], seed=args.data_seed,
                       train_starts=args.train_starts)
        idx = subsample(len(data.clean), data.n_obs, r["n"], seed=args.data_seed + r["n"])
        yield r, model, data, idx


def z0_split_table(args, out: Path) -> list[dict]:
    """:func:`z0_split` of every recorded latent ODE row of the asked settings (noise
    levels, n, seeds, solver, ``--iters``), from its final checkpoint; merged into
    ``z0_split.json`` / ``.md`` / ``.csv`` (a row of the same setting is replaced, the
    others kept). Returns this call's rows."""
    table = []
    for r, model, data, idx in _recorded_models(args, out, "--z0-split"):
        seed = r.get("seed", 0)
        row = {"noise": r["noise"], "n": r["n"], "seed": seed, "solver": r["solver"],
               "iterations": r["iterations"], "recorded_rmse": r["rmse"],
               **z0_split(model, data, idx, args.z0_steps)}
        row["encoder_share"] = (row["encoder_rmse"] - row["fitted_rmse"]) / row["encoder_rmse"]
        print(f"-- noise {r['noise']:g}, n = {r['n']}, seed {seed}: encoder "
              f"{row['encoder_rmse']:.4f}, fitted z0 {row['fitted_rmse']:.4f}, oracle z0 "
              f"{row['oracle_rmse']:.4f}", flush=True)
        table.append(row)
    merge_table(out / "z0_split", table, ("noise", "n", "seed", "iterations", "solver"),
                ["noise", "n", "seed", "solver", "iterations", "recorded_rmse", "encoder_rmse",
                 "fitted_rmse", "oracle_rmse", "encoder_share", "fitted_window",
                 "oracle_window"])
    return table


def method_check_table(args, out: Path) -> list[dict]:
    """Every recorded latent ODE row of the asked settings, its final weights run
    through a second solver (``--method-check METHOD``, same tolerance): the test
    RMSE through each, and the full-batch training loss and its gradient through each
    at the same reparameterisation draw. Shows whether rows trained on one path (the
    in-graph fast path) stand for the other (the paper's SciPy adjoint) at the weights
    they reached. Merged into ``method_check.json`` / ``.md`` / ``.csv`` (a row of the
    same setting and the same two solvers is replaced, the others kept). Returns this
    call's rows."""
    import tensorflow as tf

    other_args = argparse.Namespace(**{**vars(args), "method": args.method_check})
    table = []
    for r, model, data, idx in _recorded_models(args, out, "--method-check"):
        other = latent_model(r["noise"], other_args)
        for mine, theirs in zip(other.trainable_variables, model.trainable_variables,
                                strict=True):
            mine.assign(theirs)
        n_tr, n_obs, seed = data.n_train, data.n_obs, r.get("seed", 0)
        x, t = (tf.constant(a) for a in observed(data, idx))
        truth = data.clean[n_tr:, n_obs:]
        row = {"noise": r["noise"], "n": r["n"], "seed": seed, "iterations": r["iterations"],
               "trained": r["solver"], "other": solver_label("latent_ode", other_args),
               "recorded_rmse": r["rmse"]}
        grads = {}
        for name, m in (("trained", model), ("other", other)):
            start = time.perf_counter()
            path, _ = m.predict_path(x[n_tr:], t[n_tr:], tf.constant(data.t))
            row[f"{name}_rmse"] = rmse(path.numpy()[:, n_obs:], truth)
            with tf.GradientTape() as tape:  # the training loss at the next iteration
                loss = elbo_loss(m, x[:n_tr], t[:n_tr], np.array([seed, r["iterations"]]))
            grads[name] = np.concatenate([tf.reshape(g, [-1]).numpy() for g in
                                          tape.gradient(loss, m.trainable_variables)])
            row[f"{name}_loss"] = float(loss)
            row[f"{name}_s"] = time.perf_counter() - start
        a, b = grads["trained"], grads["other"]
        row["grad_rel_diff"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        row["grad_cosine"] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        print(f"-- noise {r['noise']:g}, n = {r['n']}, seed {seed}: test RMSE "
              f"{row['trained_rmse']:.4f} ({args.method}) / {row['other_rmse']:.4f} "
              f"({args.method_check}), gradients {row['grad_rel_diff']:.2e} apart",
              flush=True)
        table.append(row)
    merge_table(out / "method_check", table,
                ("noise", "n", "seed", "iterations", "trained", "other"),
                ["noise", "n", "seed", "iterations", "trained", "other", "recorded_rmse",
                 "trained_rmse", "other_rmse", "trained_loss", "other_loss", "grad_rel_diff",
                 "grad_cosine", "trained_s", "other_s"])
    return table


def _seen_unseen(extrap, truth, unseen) -> dict:
    """The RMSE over the future points on stretches of their curve that some training
    window covers (``rmse_seen``) and over the rest (``rmse_unseen``, None when there
    are none), with the share of the rest (``unseen_share``).

    The uncovered points sit late in their futures (on the spirals that start late), and
    the error grows along the horizon, so the two are also compared step for step:
    ``rmse_seen_matched`` is the covered points' RMSE with each future step weighted by
    its count of uncovered points (steps without covered points left out), the covered
    points' error where the uncovered ones are in the horizon (None without uncovered
    points).
    """
    err = np.sum((np.asarray(extrap) - np.asarray(truth)) ** 2, -1)
    dim = np.shape(truth)[-1]

    def part(mask):
        return float(np.sqrt(err[mask].mean() / dim)) if mask.any() else None

    seen = ~unseen
    per_step = np.where(seen.any(0), (err * seen).sum(0) / np.maximum(seen.sum(0), 1), 0.0)
    weight = unseen.sum(0) * seen.any(0)
    matched = (float(np.sqrt((weight * per_step).sum() / weight.sum() / dim))
               if weight.any() else None)
    return {"rmse_seen": part(seen), "rmse_unseen": part(unseen),
            "rmse_seen_matched": matched, "unseen_share": float(unseen.mean())}


def _merge_rows(rows_path: Path, rows: list[dict], mine: set) -> list[dict]:
    """``rows`` (this run's own, those whose :func:`_row_key` is in ``mine``, the
    settings it plans) with the rows that other runs have written to ``rows_path``
    meanwhile: runs of disjoint settings (models, cells, noise levels, observation
    counts or seeds) may share one folder, for instance one process per core."""
    if not rows_path.exists():
        return rows
    theirs = [r for r in json.loads(rows_path.read_text()) if _row_key(r) not in mine]
    return theirs + [r for r in rows if _row_key(r) in mine]


@contextlib.contextmanager
def _locked(path: Path):
    """Holds an exclusive lock on ``path``'s lock file (``.name.lock`` beside it), so
    that two runs sharing a folder do not interleave reading and writing it."""
    import fcntl

    with open(path.with_name(f".{path.name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def table2(args, out: Path) -> list[dict]:
    """Trains and evaluates every (noise, n, model, seed), resuming from ``rows.json``
    (finished settings) and from each model's checkpoint (the one in progress)."""
    rows_path = out / "rows.json"
    if rows_path.exists():
        other = {r.get("train_starts", "shared") for r in json.loads(rows_path.read_text())}
        other.discard(args.train_starts)
        if other:
            raise ValueError(
                f"{rows_path} holds rows trained with --train-starts {other.pop()}, not "
                f"{args.train_starts}: the training data differ, so they cannot share one "
                "table. Give this run another --out.")
    rows = json.loads(rows_path.read_text()) if args.resume and rows_path.exists() else []
    # A setting trained for fewer iterations than asked now is extended: its checkpoint
    # continues the training (bitwise as if run that long at once), and its row stays in
    # rows.json until the new one replaces it, so that a stopped run loses no row.
    mine = {_done_key(noise, n, kind, seed, solver_label(kind, args)) for noise in args.noise
            for n in args.n_obs for seed in args.seeds for kind in args.models}
    planned = {kind: args.iters if kind == "latent_ode" else args.rnn_iters for kind in MODELS}
    extended = [r for r in rows
                if _row_key(r) in mine and r["iterations"] < planned[r["key"]]]
    for r in extended:
        decays = args.lr_decay if r["key"] == "latent_ode" else args.rnn_decay
        if decays == "cosine":
            # The schedule spans the whole run: a longer run is a new run. The finished
            # shorter run's checkpoint goes; one at another iteration is of a retraining
            # that was stopped, and continues.
            stem = _stem(r["key"], r["noise"], r["n"], r.get("seed", 0), args)
            path = out / f"checkpoint_{stem}.npz"
            if path.exists() and checkpoint_iteration(path) == r["iterations"]:
                path.unlink()
            print(f"-- {r['model']}, noise {r['noise']:g}, n = {r['n']}: retraining for "
                  f"{planned[r['key']]} iterations (its learning rate schedule spans the run)")
            continue
        print(f"-- {r['model']}, noise {r['noise']:g}, n = {r['n']}: extending from "
              f"{r['iterations']} to {planned[r['key']]} iterations")
    previous = {}  # rows evaluated afresh: what only their training measured stays
    if getattr(args, "reevaluate", False):
        # Evaluated afresh from their final checkpoints, without training.
        again = [r for r in rows if _row_key(r) in mine and r not in extended]
        for r in again:
            if r["iterations"] != planned[r["key"]]:
                raise ValueError(
                    f"--reevaluate: {r['model']} at noise {r['noise']:g}, n = {r['n']} was "
                    f"trained for {r['iterations']} iterations, not the {planned[r['key']]} "
                    "asked: give the iterations it was trained for.")
            stem = _stem(r["key"], r["noise"], r["n"], r.get("seed", 0), args)
            path = out / f"checkpoint_{stem}.npz"
            if not path.exists():
                raise FileNotFoundError(
                    f"--reevaluate needs {path.name} in {out} for {r['model']} at noise "
                    f"{r['noise']:g}, n = {r['n']}: it is not there.")
            if checkpoint_iteration(path) != r["iterations"]:
                print(f"-- {r['model']}, noise {r['noise']:g}, n = {r['n']}, seed "
                      f"{r.get('seed', 0)}: NOT re-evaluated, {path.name} holds iteration "
                      f"{checkpoint_iteration(path)}, not the recorded row's "
                      f"{r['iterations']} (a longer run was stopped); the row stays as it is.")
                continue
            previous[_row_key(r)] = r
        again = [r for r in again if _row_key(r) in previous]
        extended += again
    pending = {_row_key(r): r for r in extended}  # written back until replaced
    rows = [r for r in rows if r not in extended]
    done = {_row_key(r) for r in rows}
    for noise in args.noise:
        data = spirals(noise_std=noise, seed=args.data_seed, train_starts=args.train_starts)
        for n in args.n_obs:
            idx = subsample(len(data.clean), data.n_obs, n, seed=args.data_seed + n)
            for seed in args.seeds:
                for kind in args.models:
                    if _done_key(noise, n, kind, seed, solver_label(kind, args)) in done:
                        print(f"-- {MODELS[kind]}, noise {noise:g}, n = {n}, seed {seed}: "
                              "done (resumed)")
                        continue
                    row = train_spiral_model(kind, data, idx, args, out, seed)
                    if _row_key(row) in previous and "backward_method" in row \
                            and row["backward_method"] is None:
                        row["backward_method"] = previous[_row_key(row)].get(
                            "backward_method")  # no backward solve ran this time
                    pending.pop(_row_key(row), None)
                    with _locked(rows_path):
                        rows = _merge_rows(rows_path, rows + [row], mine)
                        # what --resume continues from
                        write_json(rows_path, rows + list(pending.values()))
                    print(f"   test RMSE (100 future points) {row['rmse']:.4f}", flush=True)
    return rows


def table2_markdown(rows: list[dict], n_obs) -> tuple[list[dict], list[str]]:
    """Table 2 as rows: one per (model, solver, noise, iterations), then the paper's.
    Over several seeds an entry is ``mean ± standard deviation (seeds)``. A latent ODE
    row whose runs recorded learning curves is followed by their late-curve means
    (:func:`curve_tail`)."""
    cols = ["model", "solver", "noise", "iterations"] + [f"{n}/100" for n in n_obs]
    groups: dict = {}
    tails: dict = {}  # the latent ODE rows' late-curve means (rmse_tail)
    for r in rows:
        key = (r["model"], r.get("solver", "-"), r["noise"], r["iterations"])
        groups.setdefault(key, {}).setdefault(r["n"], []).append(r["rmse"])
        if r.get("key") == "latent_ode":
            tails.setdefault(key, {}).setdefault(r["n"], []).append(r.get("rmse_tail"))
    out = []
    for (model, solver, noise, iters), by_n in sorted(
            groups.items(), key=lambda kv: (-kv[0][2], kv[0][0], kv[0][1], kv[0][3])):
        entry = {"model": model, "solver": solver, "noise": noise, "iterations": iters}
        entry.update({f"{n}/100": _spread(values) for n, values in by_n.items()})
        out.append(entry)
        late = tails.get((model, solver, noise, iters), {})
        if late and not any(None in values for values in late.values()):
            out.append({**entry, "model": f"{model}, late-curve mean",
                        **{f"{n}/100": _spread(values) for n, values in late.items()}})
    for name, values in PAPER_TABLE2.items():
        out.append({"model": f"{name} (paper)",
                    "solver": "odeint 1.49e-08 (adjoint)" if name == "Latent ODE" else "-",
                    "noise": "unpublished", "iterations": "",
                    **{f"{n}/100": f"{values[n]:.4f}" for n in n_obs if n in values}})
    return out, cols


def _spread(values: list[float]) -> str:
    return (f"{values[0]:.4f}" if len(values) == 1 else
            f"{np.mean(values):.4f} ± {np.std(values):.4f} ({len(values)})")


def headline_records(rows: list[dict], noise: float,
                     iterations: int | None = None) -> tuple[int | None, dict]:
    """The latent ODE rows the headline takes at one noise level and training length:
    ``(iterations, {n: {seed: row}})``, where each seed's row is the paper's method
    (SciPy ``odeint`` with the adjoint, constant learning rate) where that seed has it,
    else the in-graph fast path. ``iterations=None`` takes the longest training at
    that noise level with the paper's constant learning rate (so a run of other
    settings leaves the headline where it was); ``(None, {})`` without such rows."""
    if iterations is None:
        lengths = [r["iterations"] for r in rows if r["key"] == "latent_ode"
                   and r["noise"] == noise and not is_variant(r.get("solver", "-"))]
        if not lengths:
            return None, {}
        iterations = max(lengths)
    records: dict = {}
    for r in rows:
        solver = r.get("solver", "-")
        if (r["key"] != "latent_ode" or r["noise"] != noise
                or r["iterations"] != iterations or is_variant(solver)):
            continue
        by_seed = records.setdefault(r["n"], {})
        paper_way = solver.startswith("odeint ") and solver.endswith("(adjoint)")
        if paper_way or r.get("seed", 0) not in by_seed:
            by_seed[r.get("seed", 0)] = r
    return iterations, {n: records[n] for n in sorted(records)}


def headline(rows: list[dict], noise: float, iterations: int | None = None) -> list[dict]:
    """The latent ODE's headline entries at one noise level and training length: per
    n, the mean and spread over the seeds of :func:`headline_records` (the paper's
    method where a seed has it, else the in-graph fast path); each entry says which
    seeds each method trained."""
    iterations, records = headline_records(rows, noise, iterations)
    out = []
    for n, by_seed in records.items():
        seeds = sorted(by_seed)
        methods: dict = {}
        for seed in seeds:
            methods.setdefault(by_seed[seed]["solver"], []).append(seed)
        values = [by_seed[seed]["rmse"] for seed in seeds]
        tails = [by_seed[seed].get("rmse_tail") for seed in seeds]
        out.append({"n": n, "noise": noise, "iterations": iterations, "rmse": _spread(values),
                    "mean": float(np.mean(values)), "std": float(np.std(values)),
                    "late_curve": "-" if None in tails else _spread(tails),
                    "seeds": seeds, "methods": "; ".join(
                        f"{solver}: seed {', '.join(map(str, ss))}"
                        for solver, ss in methods.items()),
                    "paper": PAPER_TABLE2["Latent ODE"].get(n)})
    return out


def calibrate_noise(rows: list[dict]) -> dict | None:
    """The noise level at which an RNN baseline comes closest to the paper's RNN row.

    For each noise level with RNN rows at every n of the paper, the distance of a
    baseline is the mean over n of ``|log(rmse / paper)|``; a level's distance is its
    nearer baseline's (the paper's table has one RNN row and does not say whether it
    is the one with time gaps; each cell is a baseline of its own). Returns the
    per-level distances and the chosen level, or None when fewer than two levels are
    complete.

    The levels are compared on the same training seeds: those that every level's RNN
    rows have (all seeds where they share none), so that one level's extra seeds do not
    weigh against another's single one; ``seeds`` says which."""
    paper = PAPER_TABLE2["RNN"]
    rnn_rows = [r for r in rows if r["key"] in ("rnn", "rnn_dt") and r["n"] in paper]
    seeds_of: dict = {}
    for r in rnn_rows:
        seeds_of.setdefault(r["noise"], set()).add(r.get("seed", 0))
    used = (set.intersection(*seeds_of.values()) or set.union(*seeds_of.values())
            if seeds_of else set())
    by_level: dict = {}
    for r in rnn_rows:
        if r.get("seed", 0) in used:
            solver = r.get("solver", "-")
            baseline = r["key"] if solver == "-" else f"{r['key']} ({solver})"
            by_level.setdefault(r["noise"], {}).setdefault(baseline, {}).setdefault(
                r["n"], []).append(r["rmse"])
    levels = []
    for noise, models in sorted(by_level.items()):
        distances = {k: float(np.mean([abs(np.log(np.mean(v[n]) / paper[n])) for n in paper]))
                     for k, v in models.items() if set(v) >= set(paper)}
        if distances:
            best = min(distances, key=distances.get)
            levels.append({"noise": noise, "distance": distances[best], "closest": best,
                           **{f"{k}_distance": d for k, d in distances.items()}})
    if len(levels) < 2:
        return None
    chosen = min(levels, key=lambda e: e["distance"])
    return {"levels": levels, "chosen_noise": chosen["noise"], "closest_model": chosen["closest"],
            "seeds": sorted(used)}


def learning_curves(rows: list[dict], out: Path) -> Path | None:
    """The test RMSE against the iteration (the ``test_rmse`` column of each row's
    history, every ``--curve-every`` iterations), one panel per noise level and
    observation count, one colour per model and solver (its seeds as separate lines),
    the paper's rows dashed; ``learning_curves.png``, or None without curves."""
    curves = []
    for r in rows:
        path = out / r.get("history", "")
        if not r.get("history") or not path.exists():
            continue
        points = [(int(e["iteration"]), float(e["test_rmse"]))
                  for e in read_csv(path) if e.get("test_rmse")]
        if points:
            curves.append((r, *zip(*points, strict=True)))
    if not curves:
        return None
    plt = pyplot()
    noises = sorted({r["noise"] for r, *_ in curves})
    ns = sorted({r["n"] for r, *_ in curves})

    def label_of(r):
        return r["model"] if r["solver"] == "-" else f"{r['model']}, {r['solver']}"

    labels = list(dict.fromkeys(label_of(r) for r, *_ in curves))
    colours = {label: plt.get_cmap("tab10")(k % 10) for k, label in enumerate(labels)}
    fig, axes = plt.subplots(len(noises), len(ns), figsize=(4.6 * len(ns), 3.4 * len(noises)),
                             squeeze=False, sharey=True)
    for r, iterations, rmses in curves:
        ax = axes[noises.index(r["noise"]), ns.index(r["n"])]
        ax.plot(iterations, rmses, color=colours[label_of(r)], lw=1, alpha=0.85)
    for (i, noise), (j, n) in itertools.product(enumerate(noises), enumerate(ns)):
        ax = axes[i, j]
        for name, style in PAPER_STYLES.items():
            if n in PAPER_TABLE2[name]:
                ax.axhline(PAPER_TABLE2[name][n], color="k", ls=style, lw=1)
        ax.set_yscale("log")
        ax.set_title(f"noise {noise:g}, {n}/100 observations", fontsize=10)
        ax.set_xlabel("iteration")
        if j == 0:
            ax.set_ylabel("test RMSE, 100 future points")
    handles = [plt.Line2D([], [], color=colours[label], label=label) for label in labels]
    handles += [plt.Line2D([], [], color="k", ls=style, label=f"{name} (paper)")
                for name, style in PAPER_STYLES.items()]
    axes[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1),
                       fontsize=7)
    return save_figure(fig, out / "learning_curves.png")


def figure8(args, out: Path, rows: list[dict], noise: float | None = None) -> Path | None:
    """Figure 8: reconstruction and extrapolation of test spirals by the RNN (with
    time gaps) and the latent ODE, at noise ``noise`` (the headline's; None: the
    noisiest of this run's) and the latent ODE's latent trajectories.

    The figure is drawn from the recorded ``rows``, not from this run's settings: the
    latent ODE the headline takes (:func:`headline_records`) at the fewest observations
    and the first seed, and the RNN with time gaps at the same setting, so that
    whichever run of a folder finishes last draws the same figure. None, leaving any
    earlier figure, when those rows or their predictions are missing.
    """
    noise = max(args.noise) if noise is None else noise
    iterations, records = headline_records(rows, noise)
    if not records:
        return None
    n = min(records)
    seed = min(records[n])
    rnn_dt = next((r for r in rows if r["key"] == "rnn_dt" and r["noise"] == noise
                   and r["n"] == n and r.get("seed", 0) == seed
                   and r.get("solver", "-") == "-"), None)
    if rnn_dt is None:
        return None
    chosen = {"latent_ode": records[n][seed], "rnn_dt": rnn_dt}
    # A run's files share its history file's stem.
    files = {k: out / f"pred_{r['history'].removeprefix('history_').removesuffix('.csv')}.npz"
             for k, r in chosen.items()}
    if not all(f.exists() for f in files.values()):
        return None
    plt = pyplot()
    data = spirals(noise_std=noise, seed=args.data_seed, train_starts=args.train_starts)
    pred = {k: np.load(f) for k, f in files.items()}
    test = slice(data.n_train, None)
    clean, noisy, cw = data.clean[test], data.noisy[test], data.clockwise[test]
    shown = [int(np.argmax(cw)), int(np.argmin(cw))]  # one clockwise, one counter-clockwise
    fig, axes = plt.subplots(len(shown), 3, figsize=(13, 4.2 * len(shown)))
    n_obs = data.n_obs
    for row, i in enumerate(shown):
        obs_index = pred["latent_ode"]["obs_index"][i]
        for col, (key, title) in enumerate((("rnn_dt", "RNN + time gaps"),
                                           ("latent_ode", "Latent ODE"))):
            ax = axes[row, col]
            ax.plot(*clean[i, :n_obs].T, color="0.6", lw=1, label="truth (observed window)")
            ax.plot(*clean[i, n_obs:].T, color="0.6", lw=1, ls="--", label="truth (future)")
            ax.scatter(*noisy[i, obs_index].T, s=10, color="k", label=f"{n} observations")
            recon = pred[key]["recon"][i]
            if key == "rnn_dt":
                ax.plot(*recon.T, color="tab:green", lw=1.2, label="one-step predictions")
            else:
                ax.plot(*recon.T, color="tab:green", lw=1.2, label="reconstruction")
            ax.plot(*pred[key]["extrap"][i].T, color="tab:red", lw=1.5, label="extrapolation")
            ax.set_title(f"{title} ({'clockwise' if cw[i] else 'counter-clockwise'})")
            ax.set_aspect("equal", "datalim")
            if row == 0:
                ax.legend(fontsize=7, loc="best")
        # Latent trajectories of the kept test spirals: (z1, z2) above, (z3, z4) below.
        ax, (d1, d2) = axes[row, 2], [(0, 1), (2, 3)][row % 2]
        z = pred["latent_ode"]["z"]
        for j in range(z.shape[1]):
            color = "tab:red" if cw[j] else "tab:blue"
            ax.plot(z[:n_obs, j, d1], z[:n_obs, j, d2], color=color, lw=0.8, alpha=0.7)
            ax.plot(z[n_obs:, j, d1], z[n_obs:, j, d2], color=color, lw=0.8, alpha=0.7, ls=":")
        ax.set_title(f"latent z{d1 + 1}, z{d2 + 1} (red: clockwise; dotted: future)",
                     fontsize=10)
    fig.suptitle(f"Figure 8: noise {noise:g}, n = {n} irregular observations per spiral; "
                 f"seed {seed}, latent ODE {chosen['latent_ode']['solver']}, "
                 f"{iterations} iterations")
    return save_figure(fig, out / "figure8_spirals.png")


def poisson(args, out: Path) -> dict:
    """Figure 7: a latent ODE with a Poisson process likelihood on toy event data."""
    import keras
    import tensorflow as tf

    from tfode.latent import LatentODE

    seed = args.seeds[0]
    keras.utils.set_random_seed(seed)
    ev = poisson_events(n_sequences=args.poisson_train + args.poisson_test, seed=seed)
    n_tr = args.poisson_train
    model = LatentODE(obs_dim=0, latent_dim=args.poisson_latent, intensity_units=20,
                      method=args.method, rtol=args.tol, atol=args.tol)
    def draw(i):
        rng = np.random.default_rng([seed, i])
        pick = rng.choice(n_tr, args.poisson_batch, replace=False)
        return ev.times[pick], ev.mask[pick], np.array([seed, i], np.int64)

    def loss_fn(b):
        t, mask, seed = b
        return -tf.reduce_mean(model.poisson_elbo(t, ev.t_end, mask, seed=seed))

    history = fit(loss_fn, model.trainable_variables, keras.optimizers.Adam(args.lr),
                  args.poisson_iters, "Poisson process latent ODE", data=draw,
                  log_every=max(1, args.poisson_iters // 50), stats=model.stats,
                  checkpoint=out / "checkpoint_poisson.npz", resume=args.resume)
    train_s = history[-1]["wall_s"]

    test = slice(n_tr, None)
    t_te, m_te = tf.constant(ev.times[test]), tf.constant(ev.mask[test])
    mean, _ = model.encode(None, t_te, m_te)
    grid = np.linspace(0.0, ev.t_end, 201)
    z_grid, _ = model.latent_trajectory(mean, tf.constant(grid), with_intensity=True)
    rate = np.exp(model.log_intensity(z_grid).numpy()).T  # [test, grid]
    # Test log-likelihood per event from the posterior mean, against the truth's and
    # a homogeneous process's (rate = events / window).
    model_ll = model.event_log_likelihood(mean, t_te, ev.t_end, m_te).numpy()
    n_events = ev.mask[test].sum(1)
    true_ll, flat_ll = [], []
    for j, i in enumerate(range(n_tr, len(ev.times))):
        s = ev.times[i][ev.mask[i]]
        w, p, c = ev.omega[i], ev.phase[i], ev.scale
        integral_true = c * (ev.t_end - (np.cos(w * ev.t_end + p) - np.cos(p)) / w)
        true_ll.append(np.sum(np.log(ev.intensity(i, s))) - integral_true)
        rate0 = max(n_events[j], 1) / ev.t_end
        flat_ll.append(n_events[j] * np.log(rate0) - rate0 * ev.t_end)
    total = n_events.sum()
    result = {"train_sequences": n_tr, "test_sequences": int(len(n_events)),
              "mean_events": float(ev.mask.sum(1).mean()), "iterations": args.poisson_iters,
              "train_s": train_s, "final_loss": history[-1]["loss"],
              "nfe_forward": history[-1]["nfe_forward"],
              "nfe_backward": history[-1]["nfe_backward"],
              "test_loglik_per_event": {"latent_ode": float(model_ll.sum() / total),
                                        "true_intensity": float(np.sum(true_ll) / total),
                                        "homogeneous": float(np.sum(flat_ll) / total)}}

    plt = pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    for ax, j in zip(axes.ravel(), range(4)):
        i = n_tr + j
        s = ev.times[i][ev.mask[i]]
        ax.plot(grid, rate[j], color="tab:red", label="learned intensity")
        ax.plot(grid, ev.intensity(i, grid), color="0.5", ls="--", label="true intensity")
        ax.plot(s, np.zeros_like(s), "|", color="k", ms=14, label="events")
        ax.set_ylim(-0.4, max(5.0, rate[j].max() * 1.1))
    axes[0, 0].legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("t")
    fig.suptitle("Figure 7: latent ODE with a Poisson process likelihood (test sequences)")
    result["figure"] = str(save_figure(fig, out / "figure7_poisson.png"))
    return result


def _parse_list(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def main(argv=None):
    from tfode.latent import PAPER_TOLERANCE

    parser = script_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="CPU run: 400 latent ODE / 3,000 RNN iterations, batches of 100, "
                             "tolerance 1e-5, Poisson 600 iterations")
    parser.add_argument("--iters", type=int, default=2000, help="training iterations per model")
    parser.add_argument("--rnn-iters", type=int, default=10_000,
                        help="training iterations per RNN baseline (they are cheap)")
    parser.add_argument("--curve-every", type=int, default=250,
                        help="iterations between test RMSE evaluations of the learning curve "
                             "(history_*.csv column test_rmse; 0: none)")
    parser.add_argument("--rnn-lr", type=float, default=0.01,
                        help="the RNN baselines' initial Adam learning rate")
    parser.add_argument("--rnn-decay", choices=("cosine", "none"), default="cosine",
                        help="the RNNs' learning rate schedule: cosine decay to 1%% at the "
                             "last iteration, or constant")
    parser.add_argument("--rnn-clipnorm", type=float, default=1.0,
                        help="the RNNs' gradient norm clip (0: none)")
    parser.add_argument("--rnn-cell", choices=("rnn", "gru"), default="rnn",
                        help="cell of the RNN baselines: the paper's tanh RNN or a GRU "
                             "(rows are labelled with the cell)")
    parser.add_argument("--batch", type=int, default=800, help="spirals per iteration")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--lr-decay", choices=("none", "cosine"), default="none",
                        help="the latent ODE's learning rate schedule: constant (the "
                             "paper's) or cosine decay to 1%% at the last iteration (rows "
                             "and files are labelled with it)")
    parser.add_argument("--reevaluate", action="store_true",
                        help="with --resume: evaluate the finished settings asked for afresh "
                             "from their final checkpoints (no training), e.g. to record "
                             "measures added since they ran")
    parser.add_argument("--train-starts", choices=TRAIN_STARTS, default="shared",
                        help="where the training spirals' windows start: 'shared', the test "
                             "spirals' range (leaving room for a future that training does "
                             "not use; the test futures then reach stretches of the curve "
                             "no training window covers); 'cover', far enough that the "
                             "windows reach as far as the test futures; 'example', the "
                             "reference example's whole range, to the curves' ends; the "
                             "test spirals are the same")
    parser.add_argument("--z0-split", action="store_true",
                        help="train nothing: split each recorded latent ODE row's error "
                             "between encoder and dynamics by fitting z0 to its test "
                             "spirals from its checkpoint (merged into z0_split.json/.md/.csv)")
    parser.add_argument("--z0-steps", type=int, default=600,
                        help="Adam steps of each z0 fit of --z0-split")
    parser.add_argument("--method-check", default=None, metavar="METHOD",
                        help="train nothing: run each recorded latent ODE row's final "
                             "weights (of --method) through METHOD at the same tolerance, "
                             "e.g. odeint for the paper's SciPy adjoint, and compare the "
                             "test RMSE, the training loss and its gradient "
                             "(merged into method_check.json/.md/.csv)")
    parser.add_argument("--dynamics-layers", type=int, default=1,
                        help="hidden layers of the latent dynamics (20 units each): 1, as "
                             "the paper describes it, or 2, as in the authors' example code "
                             "(rows and files are labelled with it)")
    parser.add_argument("--tol", type=float, default=PAPER_TOLERANCE,
                        help="rtol = atol of the latent solves (paper: SciPy's 1.49e-8)")
    parser.add_argument("--method", default="odeint", help="solver (paper: SciPy odeint)")
    parser.add_argument("--noise", type=_parse_list(float), default=[0.3, 0.1],
                        help="noise standard deviations, comma separated")
    parser.add_argument("--n-obs", type=_parse_list(int), default=[30, 50, 100],
                        help="observations per spiral, comma separated")
    parser.add_argument("--models", type=_parse_list(str), default=list(MODELS),
                        help="comma list of " + ", ".join(MODELS))
    parser.add_argument("--poisson-iters", type=int, default=1000, help="Poisson model steps")
    parser.add_argument("--poisson-train", type=int, default=200, help="training sequences")
    parser.add_argument("--poisson-test", type=int, default=50, help="test sequences")
    parser.add_argument("--poisson-batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--poisson-latent", type=int, default=4, help="Poisson latent size")
    parser.add_argument("--figure-spirals", type=int, default=20,
                        help="test spirals kept for the figures")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: table2,poisson")
    parser.add_argument("--resume", action="store_true",
                        help="skip the settings already in OUT/rows.json")
    parser.add_argument("--seeds", type=_parse_list(int), default=[0],
                        help="training seeds (initial weights, batches, noise of the ELBO "
                             "sample), comma separated; the Poisson model uses the first")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the spirals and of the irregular subsamples")
    parser.add_argument("--out", default="results/latent_ode", help="output folder")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.dynamics_layers < 1:
        parser.error(f"--dynamics-layers must be 1 or more hidden layers; got "
                     f"{args.dynamics_layers}")
    if args.method_check is not None:
        import tfode

        if args.method_check not in tfode.methods():
            parser.error(f"--method-check {args.method_check!r} is not a method; choose from "
                         f"{', '.join(sorted(tfode.methods()))}")
    if args.reevaluate and not args.resume:
        parser.error("--reevaluate evaluates recorded settings from their checkpoints: "
                     "give --resume with it")
    if args.quick:
        for key, value in {"iters": 400, "rnn_iters": 3000, "batch": 100, "tol": 1e-5,
                           "poisson_iters": 600}.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    out = Path(args.out)
    if args.z0_split:  # evaluates recorded models; results.json stays as it is
        return {"z0_split": z0_split_table(args, out)}
    if args.method_check:  # the same
        return {"method_check": method_check_table(args, out)}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = {"experiment": "latent_ode", "args": vars(args), "machine": machine()}
    if "table2" not in args.skip:
        rows = table2(args, out)
        summary["runs"] = rows
        table, cols = table2_markdown(rows, sorted({r["n"] for r in rows}))
        summary["table2"] = table
        write_table(out / "table2", table, cols)
        curves = learning_curves(rows, out)
        if curves is not None:
            summary["learning_curves"] = str(curves)
        calibration = calibrate_noise(rows)
        shown = None  # Figure 8's noise level: the headline's, once calibrated
        if calibration is not None:
            shown = calibration["chosen_noise"]
            summary["noise_calibration"] = calibration
            write_table(out / "noise_calibration", calibration["levels"],
                        ["noise", "distance", "closest", "rnn_distance", "rnn_dt_distance"])
            print(f"noise level closest to the paper's RNN row: "
                  f"{calibration['chosen_noise']:g} ({calibration['closest_model']}; seeds "
                  f"{', '.join(map(str, calibration['seeds']))})")
            lines = headline(rows, calibration["chosen_noise"])
            if lines:
                summary["headline"] = lines
                write_table(out / "headline", lines,
                            ["n", "noise", "iterations", "rmse", "late_curve", "paper",
                             "methods"])
        summary["figure8"] = str(figure8(args, out, rows, shown))
    if "poisson" not in args.skip:
        summary["poisson"] = poisson(args, out)
        print(json.dumps(summary["poisson"]["test_loglik_per_event"], indent=1))
    return finish(out, summary, start)


if __name__ == "__main__":
    main()
