"""Image datasets as whole uint8 tensors: `load` a registered source (or a corrupted split of
one) by name, or list them."""

from thresher.data.dataset import ArrayDataset
from thresher.data.formats import DataError
from thresher.data.loading import load, load_splits
from thresher.data.sources import DatasetInfo, list_datasets, register_source, resolve_data_dir

__all__ = ["ArrayDataset", "DataError", "DatasetInfo", "list_datasets", "load", "load_splits",
           "register_source", "resolve_data_dir"]
