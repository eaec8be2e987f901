"""The data stage: read a table, validate it against the config, split, encode labels, resample.

Nothing here builds models; the task objects passed in only encode labels.
"""

from mtl.data.prepare import PreparedData, SplitData, prepare
from mtl.data.sources import DATASETS, read_table

__all__ = ["DATASETS", "PreparedData", "SplitData", "prepare", "read_table"]
