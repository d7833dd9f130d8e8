"""The data package's error type, in a module of its own so that every data module can raise it without
importing another (``yolojax.data.dataset_yaml.DatasetError`` is the same class)."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset YAML, folder or label problem the user must fix (one-paragraph message)."""
