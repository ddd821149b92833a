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


def block_layout(blocks_fn: Callable, t0: float, y0: np.ndarray) -> BlockLayout:
    """The layout of ``blocks_fn``'s blocks at ``(t0, y0)`` (one call)."""
    blocks = np.asarray(blocks_fn(t0, y0))
    if blocks.ndim != 3 or blocks.shape[1] != blocks.shape[2] or (
            blocks.shape[0] * blocks.shape[1] != np.size(y0)):
        raise ValueError(f"jac_blocks must return (B, d, d) blocks with B * d = {np.size(y0)} "
                         f"(the state size); got shape {blocks.shape}.")
    return BlockLayout(blocks.shape[0], blocks.shape[1])
