"""Adjoints as objects: how the gradient of a solve is computed.

Each adjoint owns its two halves: :meth:`Adjoint.forward` runs the forward solve and
returns, besides the states, what its backward half needs (nothing, the dense
solution's table, or the checkpoints) as one float64 array that the custom gradient
keeps as a saved activation; :meth:`Adjoint.backward` computes the gradients from it.

* :class:`Backsolve`: the paper's (Algorithm 1, Appendices C-D): ``y`` integrated
  backward with the adjoint. O(1) memory; unstable on stiff or contracting dynamics.
* :class:`Interpolating`: ``[a, dL/dtheta]`` integrated backward against the forward
  method's dense output. Memory O(steps).
* :class:`Quadrature`: only ``a`` integrated backward (with ``-J^T`` as its Jacobian
  when one is given), ``dL/dtheta`` by Gauss-Legendre quadrature on each backward
  step. Memory O(steps); right gradients through stiff dynamics.
* :class:`Checkpointed`: the states at the output times and ``checkpoints`` extra
  times kept; each interval re-solved densely, then as :class:`Quadrature`.
  Memory O(checkpoints).

The strings ``"backsolve"``, ``"interpolating"``, ``"quadrature"`` and
``"checkpointed"`` stand for the defaults of each.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import solvers_bridge as sb

#: Forward options that describe the forward state only (not carried to the backward
#: system, whose size differs).
_STATE_OPTIONS = ("lband", "uband")


@dataclasses.dataclass
class SolveSpec:
    """What the forward solve is: the method, tolerances, options and Jacobian kind
    (``None``, ``"autodiff"`` or ``"banded"``), and the parameter count."""

    method: str
    rtol: object
    atol: object
    options: dict
    jacobian: str | None
    n_params: int

    def jacobians(self, cb) -> dict:
        """The bridge's Jacobian arguments for this solve from the callbacks."""
        if self.jacobian == "autodiff":
            return {"jac": cb.jac}
        if self.jacobian == "banded":
            return {"jac_blocks": cb.block_jac}
        return {}


class Adjoint:
    """Base class: the backward method, tolerances and options of a gradient.

    Args:
        method: The backward method (a registry name); ``None``: chosen from the
            forward method (see each adjoint).
        rtol: Backward relative tolerance; ``None``: the forward one.
        atol: Backward absolute tolerance; ``None``: the forward one.
        options: Backward solver options; ``None``: the forward options that do
            not describe the forward state alone (all but ``lband``/``uband``).
    """

    name = "adjoint"

    def __init__(self, method: str | None = None, rtol=None, atol=None,
                 options: dict | None = None):
        if method is not None:
            sb.get_method(method)  # a clear error for an unknown name
        for label, tol in (("rtol", rtol), ("atol", atol)):
            if tol is not None:
                arr = np.asarray(tol, dtype=np.float64)
                if not (np.isfinite(arr).all() and (arr >= 0).all()):
                    raise ValueError(f"{type(self).__name__}: {label} must be non-negative "
                                     f"and finite; got {tol!r}.")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"{type(self).__name__}: options must be a dict; got "
                            f"{type(options).__name__}.")
        self.method, self.rtol, self.atol = method, rtol, atol
        self.options = None if options is None else dict(options)

    # -- configuration ----------------------------------------------------------------

    def get_config(self) -> dict:
        """The constructor arguments (JSON-friendly), with the class under ``"adjoint"``."""
        config = {"adjoint": self.name, "method": self.method, "rtol": _plain(self.rtol),
                  "atol": _plain(self.atol), "options": self.options}
        config.update(self._extra_config())
        return config

    def _extra_config(self) -> dict:
        return {}

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self) -> str:
        args = {k: v for k, v in self.get_config().items() if k != "adjoint" and v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"

    # -- binding to a forward solve ---------------------------------------------------

    def backward_method(self, spec: SolveSpec, n: int) -> str:
        return self.method or spec.method

    def backward_options(self, spec: SolveSpec) -> dict:
        if self.options is not None:
            return dict(self.options)
        return {k: v for k, v in spec.options.items() if k not in _STATE_OPTIONS}

    def tolerances(self, spec: SolveSpec):
        return (spec.rtol if self.rtol is None else self.rtol,
                spec.atol if self.atol is None else self.atol)

    def check(self, spec: SolveSpec) -> None:
        """Validates this adjoint against the forward solve (before any graph runs)."""
        method = self.method or spec.method
        rtol, atol = (float(np.min(tol)) for tol in self.tolerances(spec))
        sb.get_method(method)(rtol, atol, None, **self.backward_options(spec))

    # -- the two halves ---------------------------------------------------------------

    def forward(self, spec: SolveSpec, cb, y0: np.ndarray, t: np.ndarray):
        """``(ys, saved, info)``: the states at ``t``, what the backward half needs."""
        raise NotImplementedError

    def forward_event(self, spec: SolveSpec, cb, y0, t0: float, event):
        """``(t_out, ys, saved, info)`` for a solve until ``event`` (see
        :func:`tfode.odeint_event`): ``t_out = [t0, t_1, ...]`` with the event times."""
        sol = sb.solve_to_event(cb.fun, y0, t0, event.t_max, event.fun, spec.method, spec.rtol,
                                spec.atol, direction=event.direction, terminal=event.terminal,
                                **spec.jacobians(cb), **spec.options)
        if sol.t_events.size == 0:
            raise ValueError(
                f"No event: event_fn did not cross zero (direction {event.direction:g}) "
                f"between t0={t0!r} and t_max={event.t_max!r}. Raise t_max or check the "
                "event function's sign.")
        t_out = np.concatenate([[t0], sol.t_events])
        ys = np.concatenate([y0[None], sol.y_events])
        return t_out, ys, self._saved_from_dense(spec, sol, t_out, ys), sol.info

    def _saved_from_dense(self, spec, sol, t_out, ys) -> np.ndarray:
        return np.zeros((0, 0))

    def backward(self, spec: SolveSpec, cb, t, ys, dys, saved,
                 time_gradients: bool = True) -> sb.AdjointResult:
        """The gradients from the cotangents ``dys`` of the states ``ys`` at ``t``
        (``dL/dt`` zeros, without its evaluations, when ``time_gradients`` is False)."""
        raise NotImplementedError


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


class Backsolve(Adjoint):
    """The paper's adjoint: the augmented state ``[y, a, dL/dt, dL/dtheta]``
    integrated backward from the last output time, interval by interval.

    Args:
        method: Backward method; by default (:func:`solvers_bridge.default_adjoint_method`)
            the forward one; ``dopri5`` after a non-stiff multistep forward solve with
            short output intervals (the backward pass restarts at each); ``adams``
            where the forward one would form a dense finite-difference Jacobian on a
            large augmented state.
        rtol, atol, options: As for :class:`Adjoint`.
        restart: Reset ``y`` to the stored forward state at each output time
            (Appendix D, the paper's code); ``False`` is pure Algorithm 1.
        seminorm: Leave the parameter and time gradients out of the backward error
            control (cheaper backward passes).
    """

    name = "backsolve"

    def __init__(self, method: str | None = None, rtol=None, atol=None,
                 options: dict | None = None, restart: bool = True, seminorm: bool = False):
        super().__init__(method, rtol, atol, options)
        self.restart, self.seminorm = bool(restart), bool(seminorm)

    def _extra_config(self):
        return {"restart": self.restart, "seminorm": self.seminorm}

    def backward_method(self, spec, n, saved=None, intervals: int = 0):
        opts = self.backward_options(spec)
        forward = None
        if saved is not None and np.size(saved) == 2:  # what forward() kept of its solve
            forward = sb.SolveInfo(method=spec.method, stiff=bool(saved[0, 0]),
                                   nsteps=int(saved[0, 1]))
        rtol, atol = self.tolerances(spec)
        return self.method or sb.default_adjoint_method(
            spec.method, 2 * n + 1 + spec.n_params,
            opts.get("max_fd_jacobian_size", sb.DEFAULT_MAX_FD_JACOBIAN_SIZE),
            forward=forward, intervals=intervals, rtol=rtol, atol=atol, options=opts)

    def forward(self, spec, cb, y0, t):
        ys, info = sb.solve(cb.fun, y0, t, spec.method, spec.rtol, spec.atol,
                            **spec.jacobians(cb), **spec.options)
        # Two numbers for the backward method's choice: whether the forward solve
        # went stiff, and its steps (against its output intervals).
        return ys, np.array([[float(info.stiff), float(info.nsteps)]]), info

    def backward(self, spec, cb, t, ys, dys, saved, time_gradients=True):
        rtol, atol = self.tolerances(spec)
        method = self.backward_method(spec, ys.shape[1], saved, len(t) - 1)
        return sb.adjoint(cb.vjp, t, ys, dys, spec.n_params, method=method, rtol=rtol,
                          atol=atol, restart=self.restart, seminorm=self.seminorm, fun=cb.fun,
                          time_gradients=time_gradients,
                          **self.backward_options(spec))


class _DenseAdjoint(Adjoint):
    """The forward half of the adjoints that keep the dense forward solution."""

    def forward(self, spec, cb, y0, t):
        sol = sb.dense_solve(cb.fun, y0, t, spec.method, spec.rtol, spec.atol,
                             **spec.jacobians(cb), **spec.options)
        return sol.ys, sol.table, sol.info

    def _saved_from_dense(self, spec, sol, t_out, ys):
        return sol.table

    def _forward_solution(self, spec, ys, saved):
        kind = sb.get_method(spec.method).dense_kind
        sol = sb.DenseSolution.from_table(kind, saved, ys.shape[1])
        sol.ys = ys
        return sol


class Interpolating(_DenseAdjoint):
    """``[a, dL/dtheta]`` integrated backward against the forward method's dense
    output (no quadrature). A stiff backward method then forms finite-difference
    Jacobians of that ``n + P`` system: for few parameters. Arguments as for
    :class:`Adjoint`; the backward method defaults to the forward one."""

    name = "interpolating"

    def backward(self, spec, cb, t, ys, dys, saved, time_gradients=True):
        rtol, atol = self.tolerances(spec)
        return sb.interpolating_adjoint(
            cb.vjp, t, self._forward_solution(spec, ys, saved), dys, spec.n_params,
            method=self.backward_method(spec, ys.shape[1]), rtol=rtol, atol=atol, fun=cb.fun,
            time_gradients=time_gradients, **self.backward_options(spec))


class Quadrature(_DenseAdjoint):
    """Only the adjoint ``a`` integrated backward (with ``-J^T`` as its Jacobian when
    the forward solve has one: ``options={"jacobian": "autodiff" | "banded"}``), the
    parameter gradients by Gauss-Legendre quadrature on every backward step.

    Args:
        nodes: Gauss-Legendre nodes per backward step.
        method, rtol, atol, options: As for :class:`Adjoint` (backward method: the
            forward one by default).
    """

    name = "quadrature"

    def __init__(self, method: str | None = None, rtol=None, atol=None,
                 options: dict | None = None, nodes: int = 4):
        super().__init__(method, rtol, atol, options)
        if int(nodes) != nodes or nodes < 1:
            raise ValueError(f"Quadrature: nodes must be a positive integer; got {nodes!r}.")
        self.nodes = int(nodes)

    def _extra_config(self):
        return {"nodes": self.nodes}

    def backward(self, spec, cb, t, ys, dys, saved, time_gradients=True):
        rtol, atol = self.tolerances(spec)
        return sb.quadrature_adjoint(
            cb.vjp, t, self._forward_solution(spec, ys, saved), dys, spec.n_params,
            method=self.backward_method(spec, ys.shape[1]), rtol=rtol, atol=atol, fun=cb.fun,
            nodes=self.nodes, time_gradients=time_gradients, **spec.jacobians(cb),
            **self.backward_options(spec))


class Checkpointed(Adjoint):
    """The quadrature adjoint from checkpoints: the states at the output times and at
    ``checkpoints`` equally spaced extra times are kept; each interval is re-solved
    forward densely (forward method, tolerances and options) before its backward pass.

    Args:
        checkpoints: Extra checkpoints between the first and last output time.
        nodes: Gauss-Legendre nodes per backward step.
        method, rtol, atol, options: As for :class:`Adjoint`.
    """

    name = "checkpointed"

    def __init__(self, method: str | None = None, rtol=None, atol=None,
                 options: dict | None = None, checkpoints: int = 0, nodes: int = 4):
        super().__init__(method, rtol, atol, options)
        if int(checkpoints) != checkpoints or checkpoints < 0:
            raise ValueError(f"Checkpointed: checkpoints must be a non-negative integer; got "
                             f"{checkpoints!r}.")
        if int(nodes) != nodes or nodes < 1:
            raise ValueError(f"Checkpointed: nodes must be a positive integer; got {nodes!r}.")
        self.checkpoints, self.nodes = int(checkpoints), int(nodes)

    def _extra_config(self):
        return {"checkpoints": self.checkpoints, "nodes": self.nodes}

    def forward(self, spec, cb, y0, t):
        grid, index = sb.checkpoint_grid(t, self.checkpoints)
        sol = sb.dense_solve(cb.fun, y0, grid, spec.method, spec.rtol, spec.atol,
                             **spec.jacobians(cb), **spec.options)
        return sol.ys[index], sol.ys, sol.info  # the checkpoints only, not the solution

    def _saved_from_dense(self, spec, sol, t_out, ys):
        grid, index = sb.checkpoint_grid(t_out, self.checkpoints)
        states = np.array(sol(grid)).T.reshape(grid.size, -1)
        states[index] = ys  # the located states themselves at the output times
        return states

    def backward(self, spec, cb, t, ys, dys, saved, time_gradients=True):
        rtol, atol = self.tolerances(spec)
        grid, index = sb.checkpoint_grid(t, self.checkpoints)
        grad_grid = np.zeros_like(saved)
        grad_grid[index] = dys
        res = sb.checkpointed_adjoint(
            cb.fun, cb.vjp, grid, saved, grad_grid, spec.n_params,
            method=self.backward_method(spec, ys.shape[1]), rtol=rtol, atol=atol,
            forward_method=spec.method, forward_rtol=spec.rtol, forward_atol=spec.atol,
            forward_options=spec.options, nodes=self.nodes, time_gradients=time_gradients,
            **spec.jacobians(cb), **self.backward_options(spec))
        res.grad_t = res.grad_t[index]
        return res


#: The adjoint classes by name (the string shorthands).
ADJOINTS: dict[str, type[Adjoint]] = {
    cls.name: cls for cls in (Backsolve, Quadrature, Interpolating, Checkpointed)}


def as_adjoint(adjoint) -> Adjoint:
    """An :class:`Adjoint` from an adjoint, its name (the defaults) or its config."""
    if isinstance(adjoint, Adjoint):
        return adjoint
    if isinstance(adjoint, dict):
        config = dict(adjoint)
        cls = ADJOINTS.get(config.pop("adjoint", None))
        if cls is None:
            raise ValueError(f"An adjoint config needs 'adjoint' set to one of "
                             f"{', '.join(ADJOINTS)}; got {adjoint!r}.")
        return cls(**config)
    if isinstance(adjoint, str) and adjoint in ADJOINTS:
        return ADJOINTS[adjoint]()
    raise ValueError(
        f"adjoint must be one of {', '.join(ADJOINTS)} or an adjoint object such as "
        f"tfode.Backsolve(rtol=1e-8) or tfode.Quadrature(nodes=4); got {adjoint!r}.")
