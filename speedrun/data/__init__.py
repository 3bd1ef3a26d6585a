"""Data: ``cifar10`` (the official archive, md5-checked download, the bundled real subset, TFDS)
into numpy; ``augment`` (normalisation, crop, flip, cutout on the device, as pure functions)."""

from speedrun.data.cifar10 import (CIFAR10_MEAN, CIFAR10_STD, SAMPLE_ARCHIVE, DataError,  # noqa: F401
                                   DataNotFoundError, dataset_name, load_cifar10)
