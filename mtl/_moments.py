"""Exact running mean and variance over batches (Chan et al.'s pairwise merge of Welford's statistics).

Why: a streaming pass sees the training split one record batch at a time; merging each batch's count, mean and sum
of squared deviations gives the same mean and (population) variance as one pass over the whole column, without
holding it, and without the cancellation of a naive sum of squares.
"""

from __future__ import annotations

import numpy as np


class RunningMoments:
    """Count, mean and sum of squared deviations of the finite values seen so far (float64; per column of a 2-D
    batch, or one scalar for a 1-D batch)."""

    def __init__(self) -> None:
        self.count: np.ndarray | float = 0.0
        self.mean: np.ndarray | float = 0.0
        self.m2: np.ndarray | float = 0.0

    def update(self, values: np.ndarray) -> RunningMoments:
        """Merge one batch (rows on axis 0); non-finite values are left out."""
        values = np.asarray(values, dtype="float64")
        finite = np.isfinite(values)
        count = finite.sum(axis=0).astype("float64")
        safe = np.where(finite, values, 0.0)
        mean = np.divide(safe.sum(axis=0), count, out=np.zeros_like(count), where=count > 0)
        m2 = np.where(finite, (safe - mean) ** 2, 0.0).sum(axis=0)
        total = self.count + count
        delta = mean - self.mean
        share = np.divide(count, total, out=np.zeros_like(np.asarray(total, "float64")), where=total > 0)
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta**2 * self.count * share
        self.count = total
        return self

    def variance(self) -> np.ndarray | float:
        """The population variance (``numpy.var`` with ``ddof=0``); 0 where fewer than one value was seen."""
        count = np.asarray(self.count, "float64")
        return np.divide(self.m2, count, out=np.zeros_like(count), where=count > 0)
