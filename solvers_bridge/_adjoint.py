"""The paper's adjoint: Algorithm 1 in its complete form (Appendix C), over several
output times (Appendix D), integrated backward through the registered solvers.

The augmented state is ``s = [y, a, g_t, g_theta]`` (sizes ``n, n, 1, P``) with
dynamics ``[f, -a^T df/dy, -a^T df/dt, -a^T df/dtheta]``. It is integrated from
``t[-1]`` back to ``t[0]`` one output interval at a time; at each output time the
cotangent ``dL/dy(t_i)`` is added to ``a``. With ``restart=True`` (Appendix D, the
paper's code) ``y`` is reset to the stored forward state at each output time; with
``restart=False`` (pure Algorithm 1) it continues from its backward-integrated value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from solvers_bridge._errors import SolverError
from solvers_bridge._info import SolveInfo
from solvers_bridge._methods import DEFAULT_MAX_FD_JACOBIAN_SIZE, get_method
from solvers_bridge._solve import DEFAULT_ATOL, DEFAULT_RTOL, check_times, check_tolerance

#: The seminorm scales the gradient components by this power of two (exactly, with
#: no rounding) so that their errors are negligible in every solver's error norm;
#: this works with the scalar-only tolerances of SciPy's DOPRI codes too.
_SEMINORM_SCALE = 2.0 ** -200


@dataclasses.dataclass
class AdjointResult:
    """Gradients from one adjoint pass.

    Attributes:
        grad_y0: dL/dy(t[0]), shape ``(n,)``.
        grad_params: dL/dtheta, shape ``(P,)``.
        grad_t: dL/dt for every output time, shape ``(len(t),)``.
        info: Statistics of the backward pass, summed over intervals; ``nfev``
            includes the evaluations made for the time gradients.
    """

    grad_y0: np.ndarray
    grad_params: np.ndarray
    grad_t: np.ndarray
    info: SolveInfo


#: A forward solve that took fewer steps than this per output interval had short
#: intervals: the backward pass, one solve per interval, is then mostly restarts.
SHORT_INTERVAL_STEPS = 4


def default_adjoint_method(forward_method: str, aug_size: int,
                           max_fd_jacobian_size: int = DEFAULT_MAX_FD_JACOBIAN_SIZE, *,
                           forward: SolveInfo | None = None, intervals: int = 0,
                           rtol=None, atol=None, options: dict | None = None) -> str:
    """The backward method used when none is given.

    1. After a multistep forward solve (``lsoda``, ``odeint``, ``adams``) that never
       used a stiff method and took fewer than :data:`SHORT_INTERVAL_STEPS` steps per
       output interval (``forward``, ``intervals``): ``dopri5``. The backward pass is
       one solve per interval, and a multistep code restarts each at order one,
       while DOPRI5 starts each at the step it last took. The backward system is as
       stiff as the forward one (its Jacobian is ``-J^T``), so a non-stiff forward
       solve means a non-stiff backward one. Only where ``dopri5`` takes the
       tolerances (scalars) and every backward option.
    2. Otherwise the forward method, unless it may form a dense finite-difference
       Jacobian (``lsoda``, ``odeint``, ``bdf``) and the augmented state (``2n + 1 +
       P``) is larger than ``max_fd_jacobian_size``: then VODE implicit Adams
       (``adams``), which never forms a Jacobian. The backsolve adjoint cannot supply
       the augmented system's Jacobian (it needs second derivatives), so stiff
       backward passes on large states are a deliberate opt-in.

    Measured on a latent ODE (100 sequences, 99 output intervals, 0.3 forward steps
    per interval) at rtol = atol = 1.49e-8, one thread: LSODA backward 2.07 s per
    training iteration, VODE Adams 1.22 s, DOPRI5 0.92 s; on the spiral MLP (9
    intervals, 22 steps each) Adams stays the better one (1,020 against 1,639
    backward evaluations at 1e-8), and rule 1 leaves it.
    """
    cls = get_method(forward_method)
    dopri5 = get_method("dopri5")
    if (forward is not None and cls.multistep and not forward.stiff and intervals > 1
            and forward.nsteps < SHORT_INTERVAL_STEPS * intervals
            and np.ndim(rtol) == 0 and np.ndim(atol) == 0
            and set(options or {}) <= dopri5.accepted_options()):
        return "dopri5"
    if cls.fd_jacobian and aug_size > max_fd_jacobian_size:
        return "adams"
    return forward_method


def adjoint(vjp: Callable[[float, np.ndarray, np.ndarray], np.ndarray], t, ys, grad_ys,
            n_params: int, *, method: str = "adams", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
            restart: bool = True, seminorm: bool = False, time_gradients: bool = True,
            fun: Callable | None = None, **options) -> AdjointResult:
    """Integrates the augmented adjoint ODE backward and returns all gradients.

    Args:
        vjp: ``vjp(t, y, a)`` returning one flat float64 array
            ``[f(t, y), a^T df/dy, a^T df/dt, a^T df/dtheta]`` of length
            ``2n + 1 + n_params`` (``df/dt`` is the explicit time derivative).
        t: The forward output times (increasing or decreasing).
        ys: The forward states, shape ``(len(t), n)``.
        grad_ys: Cotangents dL/dy(t_i), shape ``(len(t), n)``.
        n_params: Number of parameters ``P``.
        method: Backward method (any name in the registry).
        rtol: Backward relative tolerance (scalar, or one per augmented component).
        atol: Backward absolute tolerance (likewise).
        restart: Reset ``y`` to the stored forward state at each output time
            (Appendix D). ``False`` gives pure Algorithm 1.
        seminorm: Take ``g_t`` and ``g_theta`` out of error control: only ``y`` and
            ``a`` set the step size (cheaper backward passes; for RMS-norm methods
            the controlled tolerances are scaled so that the norm is not diluted).
        time_gradients: Compute dL/dt. Costs one ``fun`` evaluation per output time.
        fun: ``fun(t, y) -> f``, used for the time gradients; defaults to the first
            ``n`` entries of ``vjp(t, y, 0)``.
        **options: Solver options, as for :func:`solve`.

    Returns:
        An :class:`AdjointResult`.

    Raises:
        SolverError: a backward interval failed; the message names the interval.
    """
    t = check_times(t)
    ys = np.asarray(ys, dtype=np.float64)
    grad_ys = np.asarray(grad_ys, dtype=np.float64)
    if ys.ndim != 2 or ys.shape[0] != t.size:
        raise ValueError(f"ys must have shape (len(t), n) = ({t.size}, n); got {ys.shape}.")
    if grad_ys.shape != ys.shape:
        raise ValueError(f"grad_ys must have the shape of ys {ys.shape}; got {grad_ys.shape}.")
    n = ys.shape[1]
    m = 2 * n + 1 + n_params
    cls = get_method(method)
    rtol, atol = _augmented_tolerances(cls, rtol, atol, n, m, seminorm)
    solver = cls(rtol, atol, None, **options)
    # Each output interval is a fresh solve (the cotangent jumps there). A one-step
    # method (no user first step) starts each at the size of the last step taken
    # before it instead of guessing again; a multistep code restarts at order one,
    # where that step is far too long, so it keeps its own starting step.
    carry = not cls.multistep and options.get("first_step") is None
    cap = options.get("max_step") or np.inf
    scale = np.ones(m)
    if seminorm:
        scale[2 * n:] = _SEMINORM_SCALE
    coef = -scale
    coef[:n] = 1.0

    def aug(s_t, s):
        return vjp(s_t, s[:n], s[n:2 * n]) * coef

    if fun is None:
        zeros = np.zeros(n)

        def fun(s_t, y):
            return np.asarray(vjp(s_t, y, zeros))[:n]

    info = SolveInfo(method=solver.name, t_reached=float(t[-1]), nintervals=0)
    grad_t = np.zeros(t.size)
    s = np.zeros(m)
    s[:n] = ys[-1]
    s[n:2 * n] = grad_ys[-1]
    for i in range(t.size - 1, 0, -1):
        if time_gradients:
            grad_t[i] = float(np.dot(grad_ys[i], fun(float(t[i]), ys[i])))
            info.nfev += 1
            s[2 * n] -= grad_t[i]
        if restart:
            s[:n] = ys[i]
        try:
            out, step_info = solver.run(aug, s * scale, t[i - 1:i + 1][::-1].copy())
        except SolverError as err:
            info.add(err.info) if err.info is not None else None
            err.args = (f"{err.args[0]} (during the adjoint pass, integrating the augmented "
                        f"state backward from t={float(t[i])!r} to t={float(t[i - 1])!r})",)
            err.info = info
            raise
        info.add(step_info)
        if carry and step_info.last_step:
            solver.opts["first_step"] = min(abs(step_info.last_step), cap)
        s = out[-1] / scale
        s[n:2 * n] += grad_ys[i - 1]
    grad_t[0] = s[2 * n] if time_gradients else 0.0
    return AdjointResult(grad_y0=s[n:2 * n].copy(), grad_params=s[2 * n + 1:].copy(),
                         grad_t=grad_t, info=info)


def _augmented_tolerances(cls, rtol, atol, n: int, m: int, seminorm: bool):
    rtol = check_tolerance(rtol, m, "adjoint rtol")
    atol = check_tolerance(atol, m, "adjoint atol")
    if seminorm and cls.rms_norm:
        # Only 2n of the m components count in the root-mean-square error norm: tighten
        # the tolerances so that those 2n are controlled as they would be alone.
        factor = np.sqrt(2 * n / m)
        rtol, atol = rtol * factor, atol * factor
    return rtol, atol
