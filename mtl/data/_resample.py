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
    table = pd.DataFrame({c: train.features[c][rows] for c in numeric + categorical})
    for column in numeric:  # SMOTE cannot interpolate NaN: fill with the median of the labelled rows
        table[column] = table[column].fillna(table[column].median() if table[column].notna().any() else 0.0)
    kwargs = dict(sampling_strategy=sampling_strategy, k_neighbors=k_neighbors, random_state=seed)
    if categorical:
        sampler = SMOTENC(categorical_features=[table.columns.get_loc(c) for c in categorical], **kwargs)
    else:
        sampler = SMOTE(**kwargs)
    try:
        with stage(f"SMOTE on {task}: {len(table):,} labelled training rows"):
            resampled, y_new = sampler.fit_resample(table, y)
    except ValueError as exc:
        raise MtlError(str(exc).splitlines()[0], where="training.smote") from None
    new = resampled.iloc[len(table):]
    y_new = np.asarray(y_new)[len(table):]
    log.info("SMOTE on %s: class counts before %s, after %s", task, counts.tolist(),
             np.bincount(np.concatenate([y, y_new]), minlength=len(counts)).tolist())

    n_new = len(new)
    features = {
        c: np.concatenate([v, new[c].to_numpy(dtype=v.dtype)]) for c, v in train.features.items()
    }
    labels, weights = {}, {}
    for name in train.labels:
        extra_y = y_new.astype(train.labels[name].dtype) if name == task else np.zeros(n_new, train.labels[name].dtype)
        labels[name] = np.concatenate([train.labels[name], extra_y])
        extra_w = np.ones(n_new, "float32") if name == task else np.zeros(n_new, "float32")
        weights[name] = np.concatenate([train.weights[name], extra_w])
    return SplitData(features, labels, weights, np.concatenate([train.rows, np.full(n_new, -1)]))
