"""Data of the latent ODE experiment: bidirectional spirals and a toy Poisson process.

Spirals (Section 5; the choices the paper leaves unpublished follow its reference
example):

* two base curves on a grid of ``ntotal = 1000`` times on ``[0, 6 pi]``:
  counter-clockwise ``r = a + b z`` with ``z = t`` centred at ``(+5, 0)``, and
  clockwise ``r = a + 50 b / z`` with ``z = 6 pi + 1 - t`` centred at ``(-5, 0)``;
  ``a = 0``, ``b = 0.3``;
* each spiral picks a direction (fair coin) and a start index uniformly in
  ``[n_obs, ntotal - n_obs - n_future]`` (not too close to either end), and takes
  ``n_obs + n_future`` consecutive points of that curve; every spiral uses the same
  model times ``t_k = k * 6 pi / 999`` (``t_0 = 0``);
* the first ``n_obs = 100`` points are the observation window, the next
  ``n_future = 100`` the extrapolation targets; Gaussian noise of std ``noise_std``
  is added to every point (the clean points are kept as the truth);
* irregular versions keep ``n`` of the ``n_obs`` window points per spiral, drawn
  without replacement, independently per spiral, kept in time order;
* the first ``n_train`` spirals (800 of 1000) train, the rest test;
* by default (``train_starts="shared"``) every spiral's start is drawn as above, so
  the training windows end at index ``ntotal - n_obs - n_future - 1`` and the test
  futures reach stretches of the curves that no training window covers;
  ``train_starts="cover"`` draws the training spirals' starts from
  ``[n_obs, ntotal - n_obs - n_future]``, so that their windows reach exactly as far
  as the test futures do; ``train_starts="example"`` from the reference example's
  whole range ``[n_obs, ntotal - n_obs)``, to the end of the curves (a training
  spiral's future points past the end are NaN; they are never used). The test
  spirals are bitwise the same in every mode.

Poisson toy (Figure 7; the paper publishes only the figure): sequences of events on
``[0, t_end = 10]`` from intensities ``lambda(t) = c (1 + sin(w t + phi))`` with ``c = 2``,
``w = 1`` (optionally uniform on a range) and ``phi`` uniform on ``[0, 2 pi)`` per
sequence (about 1.6 periods per window and 20 events per sequence), sampled exactly by
thinning a homogeneous process of rate ``2c``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STOP = 6 * np.pi
NTOTAL = 1000
#: How the training spirals' windows may start (see the module docstring).
TRAIN_STARTS = ("shared", "cover", "example")


@dataclasses.dataclass
class Spirals:
    """A spiral dataset.

    Attributes:
        t: Model times of every spiral, ``[n_obs + n_future]``.
        clean: Noise-free points, ``[n_spirals, n_obs + n_future, 2]``.
        noisy: Observed points (clean plus noise), same shape.
        clockwise: Direction of each spiral, ``[n_spirals]`` bool.
        n_obs: Length of the observation window (the rest is extrapolation).
        n_train: The first ``n_train`` spirals are the training set.
        noise_std: Standard deviation of the added noise.
        starts: Index on its base curve of each spiral's first point, ``[n_spirals]``.
        train_starts: How the training spirals' starts were drawn (``"shared"``,
            ``"cover"`` or ``"example"``, see the module docstring).
    """

    t: np.ndarray
    clean: np.ndarray
    noisy: np.ndarray
    clockwise: np.ndarray
    n_obs: int
    n_train: int
    noise_std: float
    starts: np.ndarray | None = None
    train_starts: str = "shared"

    def unseen_future(self) -> np.ndarray:
        """``[n_spirals, n_future]`` bool: which future points lie on a stretch of
        their base curve that no training spiral's observation window covers (so that
        a model extrapolates there into states it never saw)."""
        covered = np.zeros((2, NTOTAL), bool)  # [counter-clockwise, clockwise]
        for start, cw in zip(self.starts[:self.n_train], self.clockwise[:self.n_train]):
            covered[int(cw), start:start + self.n_obs] = True
        future = self.starts[:, None] + np.arange(self.n_obs, len(self.t))
        inside = future < NTOTAL
        seen = np.zeros(future.shape, bool)
        seen[inside] = covered[np.broadcast_to(self.clockwise[:, None].astype(int),
                                               future.shape)[inside], future[inside]]
        return ~seen


def spirals(n_spirals: int = 1000, n_obs: int = 100, n_future: int = 100,
            noise_std: float = 0.3, n_train: int = 800, a: float = 0.0, b: float = 0.3,
            seed: int = 0, train_starts: str = "shared") -> Spirals:
    """Generates the bidirectional spiral dataset (see the module docstring)."""
    if train_starts not in TRAIN_STARTS:
        raise ValueError(f"train_starts must be one of {', '.join(TRAIN_STARTS)}; got "
                         f"{train_starts!r}.")
    length = n_obs + n_future
    if length + n_obs > NTOTAL:
        raise ValueError(f"n_obs + n_future + n_obs = {length + n_obs} exceeds the {NTOTAL} "
                         "points of the base curves.")
    if not 0 < n_train < n_spirals:
        raise ValueError(f"n_train must be in (0, n_spirals = {n_spirals}); got {n_train}.")
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, STOP, NTOTAL)
    z_cw = STOP + 1.0 - grid
    r_cw = a + b * 50.0 / z_cw
    cw = np.stack([r_cw * np.cos(z_cw) - 5.0, r_cw * np.sin(z_cw)], 1)
    r_cc = a + b * grid
    cc = np.stack([r_cc * np.cos(grid) + 5.0, r_cc * np.sin(grid)], 1)
    clockwise = rng.random(n_spirals) < 0.5
    starts = rng.integers(n_obs, NTOTAL - length - n_obs + 1, n_spirals)
    if train_starts != "shared":  # a stream of its own: the test spirals stay as they are
        high = NTOTAL - n_obs if train_starts == "example" else NTOTAL - length + 1
        starts[:n_train] = np.random.default_rng([seed, 1]).integers(n_obs, high, n_train)
    window = starts[:, None] + np.arange(length)
    past_end = window >= NTOTAL
    window = np.minimum(window, NTOTAL - 1)
    clean = np.where(clockwise[:, None, None], cw[window], cc[window])
    clean[past_end] = np.nan
    noisy = clean + rng.normal(0.0, noise_std, clean.shape)
    return Spirals(grid[:length].copy(), clean, noisy, clockwise, n_obs, n_train,
                   float(noise_std), starts, train_starts)


def subsample(n_spirals: int, n_obs: int, n: int, seed: int = 0) -> np.ndarray:
    """Per spiral, ``n`` distinct indices of ``range(n_obs)`` in increasing order,
    ``[n_spirals, n]``, drawn without replacement and independently per spiral."""
    if not 1 <= n <= n_obs:
        raise ValueError(f"n must be between 1 and n_obs = {n_obs}; got {n}.")
    rng = np.random.default_rng(seed)
    keys = rng.random((n_spirals, n_obs))
    return np.sort(np.argsort(keys, axis=1)[:, :n], axis=1)


def rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error over every point and coordinate."""
    return float(np.sqrt(np.mean((np.asarray(prediction) - np.asarray(truth)) ** 2)))


@dataclasses.dataclass
class Events:
    """Padded event sequences of a Poisson process.

    Attributes:
        times: ``[n_sequences, max_events]`` event times, padding ``0``.
        mask: ``[n_sequences, max_events]`` bool, True for real events.
        t_end: End of the observation window.
        omega, phase: Parameters of each sequence's true intensity.
        scale: The intensity's ``c``.
    """

    times: np.ndarray
    mask: np.ndarray
    t_end: float
    omega: np.ndarray
    phase: np.ndarray
    scale: float

    def intensity(self, i: int, t: np.ndarray) -> np.ndarray:
        """The true intensity of sequence ``i`` at times ``t``."""
        return self.scale * (1.0 + np.sin(self.omega[i] * t + self.phase[i]))


def poisson_events(n_sequences: int = 200, t_end: float = 10.0, scale: float = 2.0,
                   omega=(1.0, 1.0), seed: int = 0) -> Events:
    """Samples the toy Poisson process dataset (see the module docstring) by thinning;
    ``omega`` is the range of the angular frequencies (fixed at 1 by default)."""
    rng = np.random.default_rng(seed)
    omega = rng.uniform(omega[0], omega[1], n_sequences)
    phase = rng.uniform(0.0, 2 * np.pi, n_sequences)
    bound = 2.0 * scale
    sequences = []
    for w, p in zip(omega, phase):
        candidates = np.sort(rng.uniform(0.0, t_end, rng.poisson(bound * t_end)))
        keep = rng.random(candidates.size) * bound < scale * (1.0 + np.sin(w * candidates + p))
        sequences.append(candidates[keep])
    width = max(1, max(s.size for s in sequences))
    times = np.zeros((n_sequences, width))
    mask = np.zeros((n_sequences, width), bool)
    for i, s in enumerate(sequences):
        times[i, :s.size], mask[i, :s.size] = s, True
    return Events(times, mask, float(t_end), omega, phase, float(scale))
