"""SMOTE upsampling of one classification task's training rows (imbalanced-learn).

Only training rows that carry the chosen task's label are resampled; SMOTE-NC is used when there
are categorical features. Synthetic rows carry no label for the other tasks (their weight is 0), and
validation and test splits are never touched.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mtl._progress import stage
from mtl.data._prepare import SplitData
from mtl.errors import MtlError

log = logging.getLogger("mtl")

_NEIGHBOUR_CHUNK_MIB = 64


def smote_resample(
    train: SplitData,
    task: str,
    numeric: list[str],
    categorical: list[str],
    sampling_strategy: float | str = "auto",
    k_neighbors: int = 5,
    seed: int = 0,
) -> SplitData:
    """Return ``train`` with synthetic rows of ``task``'s minority class(es) appended."""
    import sklearn
    from imblearn.over_sampling import SMOTE, SMOTENC

    rows = train.labelled(task)
    y = train.labels[task][rows].astype(int)
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest <= k_neighbors:
        raise MtlError(
            f"k_neighbors={k_neighbors} needs more than {k_neighbors} labelled rows in every class of "
            f"{task!r}; the smallest class has {smallest}",
            where="training.smote",
        )
    matrix, vocabularies = _smote_matrix(train, rows, numeric, categorical)
    kwargs = dict(sampling_strategy=sampling_strategy, k_neighbors=k_neighbors, random_state=seed)
    if categorical:
        sampler = SMOTENC(categorical_features=list(range(len(numeric), len(numeric) + len(categorical))), **kwargs)
    else:
        sampler = SMOTE(**kwargs)
    try:
        # sklearn computes neighbour distances in chunks of up to working_memory MiB (1 GiB by default): the peak
        with stage(f"SMOTE on {task}: {len(y):,} labelled training rows"), \
                sklearn.config_context(working_memory=_NEIGHBOUR_CHUNK_MIB):
            resampled, y_new = sampler.fit_resample(matrix, y)
    except ValueError as exc:
        raise MtlError(str(exc).splitlines()[0], where="training.smote") from None
    new = resampled[len(matrix):]
    del resampled, matrix
    y_new = np.asarray(y_new)[len(y):]
    log.info("SMOTE on %s: class counts before %s, after %s", task, counts.tolist(),
             np.bincount(np.concatenate([y, y_new]), minlength=len(counts)).tolist())

    n_new = len(new)
    synthetic = {c: new[:, i] for i, c in enumerate(numeric)}
    for i, c in enumerate(categorical):  # back from codes to the column's own values
        synthetic[c] = vocabularies[c][np.rint(new[:, len(numeric) + i]).astype("int64")]
    features = {c: np.concatenate([v, synthetic[c].astype(v.dtype, copy=False)]) for c, v in train.features.items()}
    labels, weights = {}, {}
    for name in train.labels:
        extra_y = y_new.astype(train.labels[name].dtype) if name == task else np.zeros(n_new, train.labels[name].dtype)
        labels[name] = np.concatenate([train.labels[name], extra_y])
        extra_w = np.ones(n_new, "float32") if name == task else np.zeros(n_new, "float32")
        weights[name] = np.concatenate([train.weights[name], extra_w])
    return SplitData(features, labels, weights, np.concatenate([train.rows, np.full(n_new, -1)]))


def _smote_matrix(train: SplitData, rows: np.ndarray, numeric: list[str],
                  categorical: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The labelled rows' SMOTE input as one float32 matrix (numeric columns, then categorical codes) and each
    categorical column's values by code.

    Why: a DataFrame mixing numbers and strings reaches imbalanced-learn as one object array (a Python object per
    cell), several times the size of the table; numbers in the split's float32 and categories as integer codes keep
    the whole resampling at the size of one numeric copy of the labelled rows (issue 11).
    """
    matrix = np.empty((int(np.count_nonzero(rows)) if rows.dtype == bool else len(rows),
                       len(numeric) + len(categorical)), dtype="float32")
    for i, column in enumerate(numeric):  # SMOTE cannot interpolate NaN: fill with the median of the labelled rows
        values = train.features[column][rows]
        finite = ~np.isnan(values)
        matrix[:, i] = np.where(finite, values, np.median(values[finite]) if finite.any() else 0.0)
    vocabularies = {}
    for i, column in enumerate(categorical):
        codes, vocabularies[column] = pd.factorize(train.features[column][rows], use_na_sentinel=False)
        matrix[:, len(numeric) + i] = codes
    return matrix, vocabularies
