"""Continual-learning scores from the accuracy matrix R.

``R[i][j]`` is the test accuracy on task j after training on tasks 0..i (one row per training
phase, one column per task). With T tasks:

- average accuracy: the mean of the last row, (1/T) sum_j R[T-1][j];
- average incremental accuracy (Rebuffi et al. 2017, iCaRL): the accuracy on the tasks seen so
  far, averaged over the training phases, (1/T) sum_i (1/(i+1)) sum_{j<=i} R[i][j]. It rewards
  learning the current task as much as remembering old ones (task 0 alone counts once in full),
  so it sits well above the average accuracy when a learner forgets; it is the "average
  accuracy over all epochs" some TA-A-GEM code reports as its headline number;
- forgetting (Chaudhry et al. 2018): for every task but the last, the best accuracy it ever had
  before the end minus its final accuracy, averaged: (1/(T-1)) sum_{j<T-1}
  max_{l<T-1} (R[l][j] - R[T-1][j]) (only rows l >= j count: a task cannot be forgotten
  before it is learned);
- backward transfer (Lopez-Paz & Ranzato 2017): (1/(T-1)) sum_{j<T-1} R[T-1][j] - R[j][j];
  negative means forgetting.

Incremental accuracy, forgetting and BWT need a square matrix (one training phase per task) and
at least two tasks; otherwise (e.g. the ``joint`` upper bound, trained once on everything) they
are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def average_accuracy(R: Matrix) -> float:
    last = R[-1]
    return sum(last) / len(last)


def average_incremental_accuracy(R: Matrix) -> float:
    if not _sequential(R):
        return math.nan
    return sum(sum(row[:i + 1]) / (i + 1) for i, row in enumerate(R)) / len(R)


def _sequential(R: Matrix) -> bool:
    return len(R) >= 2 and all(len(row) == len(R) for row in R)


def forgetting(R: Matrix) -> float:
    if not _sequential(R):
        return math.nan
    T = len(R)
    drops = [max(R[i][j] for i in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)]
    return sum(drops) / len(drops)


def backward_transfer(R: Matrix) -> float:
    if not _sequential(R):
        return math.nan
    T = len(R)
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)
