"""Dense solutions as plain arrays: one row per accepted step.

Every method of the registry has a dense output, each its integrator's own:

* ``nordsieck``: the Nordsieck history array of LSODA (read as
  ``scipy.integrate.LSODA`` reads it) and of VODE's Adams and BDF: the interpolant
  of the integrator itself;
* ``rk4``/``rk3``: the continuous extensions of SciPy's RK45 and RK23;
* ``radau``: Radau IIA's collocation polynomial;
* ``hermite``: cubic Hermite interpolation between accepted steps from the states
  and derivatives there, for the codes whose interpolant SciPy does not expose
  (DOPRI5 and DOP853 as ``scipy.integrate.ode`` drives them). It is of fourth order
  only: for dense adjoints with an explicit method prefer ``rk45`` (its own
  quartic extension) or bound the step with ``max_step``.

A solution is ``(kind, table, span)``: ``table[k] = [t_old, t_new, payload...]``
for the ``k``-th step in the order taken. Being one float64 array it can travel as
a tensor (the TensorFlow frontend keeps it as a saved activation of the gradient)
and be rebuilt anywhere with :meth:`DenseSolution.from_table`.
"""

from __future__ import annotations

import numpy as np

#: Columns of a Nordsieck array kept per step (LSODA's and VODE's orders are <= 12).
NORDSIECK_COLUMNS = 13

#: Payload width per kind, as a function of the state size ``n``.
_WIDTH = {
    "hermite": lambda n: 4 * n,  # y_old, y_new, f_old, f_new
    "nordsieck": lambda n: 2 + NORDSIECK_COLUMNS * n,  # h, order, yh (n x 13, row-major)
    "rk4": lambda n: n + 4 * n,  # y_old, Q (n x 4)
    "rk3": lambda n: n + 3 * n,  # y_old, Q (n x 3)
    "radau": lambda n: n + 3 * n,  # y_old, Q (n x 3)
}
KINDS = tuple(_WIDTH)


def row_width(kind: str, n: int) -> int:
    """The width of one table row (two times and the payload)."""
    return 2 + _WIDTH[kind](n)


def hermite_row(t_old, t_new, y_old, y_new, f_old, f_new) -> np.ndarray:
    return np.concatenate([[t_old, t_new], y_old, y_new, f_old, f_new])


def nordsieck_row(t_old, t_new, h, order, yh) -> np.ndarray:
    n = yh.shape[0]
    full = np.zeros((n, NORDSIECK_COLUMNS))
    full[:, :order + 1] = yh
    return np.concatenate([[t_old, t_new, h, order], full.ravel()])


def q_row(t_old, t_new, y_old, q) -> np.ndarray:
    return np.concatenate([[t_old, t_new], y_old, np.asarray(q).ravel()])


def evaluate_row(kind: str, row: np.ndarray, n: int, s: float) -> np.ndarray:
    """The interpolant of one step at the time ``s``."""
    if n == 0:
        return np.zeros(0)
    t_old, t_new = row[0], row[1]
    p = row[2:]
    if kind == "hermite":
        h = t_new - t_old
        x = (s - t_old) / h
        x2, x3 = x * x, x * x * x
        y0, y1, f0, f1 = p[:n], p[n:2 * n], p[2 * n:3 * n], p[3 * n:]
        return ((2 * x3 - 3 * x2 + 1) * y0 + (x3 - 2 * x2 + x) * h * f0
                + (3 * x2 - 2 * x3) * y1 + (x3 - x2) * h * f1)
    if kind == "nordsieck":
        h, order = p[0], int(p[1])
        yh = p[2:].reshape(n, NORDSIECK_COLUMNS)[:, :order + 1]
        return yh @ (((s - t_new) / h) ** np.arange(order + 1))
    y_old = p[:n]
    q = p[n:].reshape(n, -1)
    h = t_new - t_old
    powers = np.cumprod(np.full(q.shape[1], (s - t_old) / h))
    if kind == "radau":  # SciPy's Radau interpolant is not scaled by h
        return y_old + q @ powers
    return y_old + h * (q @ powers)


class DenseSolution:
    """A solution ``y(t)`` anywhere in its span, and the states at its output times.

    Attributes:
        kind: The interpolant (see the module docstring).
        table: ``(steps, width)`` float64, one row per accepted step.
        span: ``(t_start, t_end)``: where the solution is defined (a last step
            that overshot ``t_end`` is clipped there for :attr:`ts`).
        ys: The states at the output times the solve was asked for (or ``None``).
        info: The :class:`~solvers_bridge.SolveInfo` of the solve (or ``None``).
    """

    def __init__(self, kind: str, table, span, n: int, ys=None, info=None):
        if kind not in _WIDTH:
            raise ValueError(f"Unknown dense-output kind {kind!r}; one of {KINDS}.")
        self.kind, self.n = kind, int(n)
        self.table = np.asarray(table, dtype=np.float64).reshape(-1, row_width(kind, n))
        self.span = (float(span[0]), float(span[1]))
        self.ys, self.info = ys, info
        self.t_events = np.zeros(0)
        self.y_events = np.zeros((0, self.n))
        direction = 1.0 if self.span[1] >= self.span[0] else -1.0
        # Step ends in increasing order, for the lookup of a time's step.
        self._sign = direction
        self._ends = direction * self.table[:, 1]

    @classmethod
    def from_table(cls, kind: str, table, n: int) -> DenseSolution:
        """Rebuilds a solution from its table (the span runs from the first step's
        start to the last step's end)."""
        table = np.asarray(table, dtype=np.float64).reshape(-1, row_width(kind, n))
        return cls(kind, table, (table[0, 0], table[-1, 1]), n)

    @property
    def sol(self) -> DenseSolution:
        """The solution itself (``sol.sol(t)`` reads like SciPy's ``res.sol(t)``)."""
        return self

    @property
    def ts(self) -> np.ndarray:
        """The step times in the order taken, ``len(steps) + 1`` of them, clipped to
        the span."""
        ts = np.concatenate([self.table[:1, 0], self.table[:, 1]])
        if self._sign * (ts[-1] - self.span[1]) > 0:
            ts[-1] = self.span[1]
        return ts

    def __call__(self, t):
        """``y(t)``: shape ``(n,)`` for a scalar ``t``, ``(n, len(t))`` for an array."""
        if np.ndim(t) == 0:
            return self._at(float(t))
        return np.stack([self._at(float(s)) for s in np.asarray(t)], axis=1)

    def _at(self, s: float) -> np.ndarray:
        k = int(np.searchsorted(self._ends, self._sign * s, side="left"))
        k = min(k, len(self._ends) - 1)
        return evaluate_row(self.kind, self.table[k], self.n, s)
