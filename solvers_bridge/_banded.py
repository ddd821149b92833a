"""Block-diagonal Jacobians of a batch of independent samples, in the formats the
solvers take.

A state laid out sample by sample (``B`` samples of ``d`` values, flattened row by
row) has a block-diagonal Jacobian: ``B`` blocks of ``d x d``, lower and upper
bandwidth ``d - 1``. Given the blocks (``(B, d, d)``, ``blocks[b, i, j] =
df_{b,i}/dy_{b,j}``), these helpers build the LAPACK-packed banded matrix of ODEPACK
and VODE (``scipy.integrate.ode``/``odeint`` and ``solve_ivp``'s LSODA with
``lband = uband = d - 1``) or a sparse matrix (``solve_ivp``'s BDF and Radau), never
the dense ``n x n`` one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import sparse


class BlockLayout:
    """Index arrays for one ``(B, d)`` layout, computed once and reused per call."""

    def __init__(self, batch: int, d: int):
        self.batch, self.d, self.n = batch, d, batch * d
        b, i, j = np.meshgrid(np.arange(batch), np.arange(d), np.arange(d), indexing="ij")
        self.rows, self.cols = (b * d + i).ravel(), (b * d + j).ravel()
        # Packed banded storage: ab[u + row - col, col] = J[row, col], u = d - 1.
        self.band_rows = (d - 1) + self.rows - self.cols

    @property
    def bandwidth(self) -> int:
        return self.d - 1

    def banded(self, blocks: np.ndarray) -> np.ndarray:
        """The packed banded matrix ``(2d - 1, n)``."""
        ab = np.zeros((2 * self.d - 1, self.n))
        ab[self.band_rows, self.cols] = np.asarray(blocks).ravel()
        return ab

    def sparse(self, blocks: np.ndarray) -> sparse.csc_matrix:
        """The block-diagonal matrix as a sparse ``n x n`` CSC matrix."""
        return sparse.csc_matrix((np.asarray(blocks).ravel(), (self.rows, self.cols)),
                                 shape=(self.n, self.n))

    def dense(self, blocks: np.ndarray) -> np.ndarray:
        """The dense ``n x n`` matrix (for checks)."""
        out = np.zeros((self.n, self.n))
        out[self.rows, self.cols] = np.asarray(blocks).ravel()
        return out


@functools.lru_cache(maxsize=16)
def _layout(batch: int, d: int) -> BlockLayout:
    return BlockLayout(batch, d)


def block_layout(blocks_fn: Callable, t0: float = 0.0, y0=None) -> BlockLayout:
    """The layout of ``blocks_fn``'s blocks: from its ``block_shape`` attribute
    ``(B, d)`` when it has one, else from one call at ``(t0, y0)``; checked against the
    state size of ``y0`` when given. Layouts are cached."""
    shape = getattr(blocks_fn, "block_shape", None)
    if shape is None:
        shape = np.shape(blocks_fn(t0, y0))
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"jac_blocks must return (B, d, d) blocks; got shape {shape}.")
    batch, d = int(shape[0]), int(shape[1])
    if y0 is not None and batch * d != np.size(y0):
        raise ValueError(f"jac_blocks must return (B, d, d) blocks with B * d = {np.size(y0)} "
                         f"(the state size); got B = {batch}, d = {d}.")
    return _layout(batch, d)
