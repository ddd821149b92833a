"""Solver statistics as TensorFlow variables, readable by Keras metrics."""

from __future__ import annotations

import tensorflow as tf

#: Layout of the int64 statistics vector a solve produces, and the variable names.
STAT_FIELDS = ("nfev", "njev", "nsteps", "nswitches", "status")
_NAMES = ("nfe", "njev", "steps", "switches", "status")


def info_vector(info) -> list[int]:
    """A :class:`solvers_bridge.SolveInfo` as the int64 vector of :data:`STAT_FIELDS`."""
    return [info.nfev, info.njev, info.nsteps, info.nswitches, info.status]


class SolveStats(tf.Module):
    """Statistics of the latest ``tfode.odeint`` call that was given this object.

    Pass one as ``odeint(..., stats=stats)``. After the forward pass its ``*_forward``
    variables hold the forward solve's numbers; after the gradient is computed its
    ``*_backward`` variables hold the adjoint pass's (evaluations include those made
    for the time gradients). The variables work eagerly, inside ``tf.function`` and
    inside ``model.fit``, so a Keras metric can read them. ``forward_info`` and
    ``backward_info`` hold the full :class:`solvers_bridge.SolveInfo` records (with
    messages) of the latest passes run from Python.

    Attributes:
        nfe_forward, njev_forward, steps_forward, switches_forward, status_forward:
            int64 variables for the forward pass.
        nfe_backward, njev_backward, steps_backward, switches_backward,
            status_backward: int64 variables for the backward pass.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        with tf.init_scope():
            for part in ("forward", "backward"):
                for attr in _NAMES:
                    # Under a distribution strategy each replica solves its own shard;
                    # the first replica's numbers are kept.
                    setattr(self, f"{attr}_{part}",
                            tf.Variable(0, dtype=tf.int64, trainable=False,
                                        name=f"{attr}_{part}",
                                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA))
        self.forward_info = None
        self.backward_info = None
        self._sums: dict[str, tuple] = {}

    def accumulate(self, part: str, total, count) -> None:
        """Also add every ``part`` pass's evaluations to ``total`` and one to ``count``
        (variables, e.g. a Keras metric's, reset by their owner): the passes' mean
        then needs no reading of the statistics at the right moment."""
        self._sums[part] = (total, count)

    def _variables_for(self, part: str) -> list[tf.Variable]:
        return [getattr(self, f"{a}_{part}") for a in _NAMES]

    def record(self, part: str, vector) -> list:
        """Assigns a statistics vector (see :data:`STAT_FIELDS`) to the ``part`` variables."""
        vector = tf.cast(vector, tf.int64)
        ops = [v.assign(vector[i]) for i, v in enumerate(self._variables_for(part))]
        # Under a distribution strategy the sums (Keras metric variables, summed over
        # the replicas on reading) are added to per replica; a cross-replica trace
        # (Keras building the model) is no pass.
        if part in self._sums and not tf.distribute.in_cross_replica_context():
            total, count = self._sums[part]
            ops += [total.assign_add(tf.cast(vector[0], total.dtype)),
                    count.assign_add(tf.ones((), count.dtype))]
        return ops

    def as_dict(self) -> dict[str, int]:
        """The current values, e.g. ``{"nfe_forward": 26, "nfe_backward": 14, ...}``."""
        return {v.name.split(":")[0].split("/")[-1]: int(v.numpy())
                for part in ("forward", "backward") for v in self._variables_for(part)}
