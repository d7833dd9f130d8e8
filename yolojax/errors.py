"""The user-facing error types: entry points print their one-paragraph message instead of a traceback."""
from __future__ import annotations


def user_error_types() -> tuple[type, ...]:
    from yolojax.data.dataset_yaml import DatasetError
    from yolojax.engine.checkpoint import CheckpointMismatchError
    from yolojax.config import ConfigError
    from yolojax.engine.devices import DeviceError
    from yolojax.engine.distributed import DistributedError
    from yolojax.torch_pickle import CheckpointFormatError, UnsafeCheckpointError

    return (DatasetError, ConfigError, DeviceError, CheckpointFormatError, UnsafeCheckpointError,
            CheckpointMismatchError, DistributedError, FileNotFoundError)
