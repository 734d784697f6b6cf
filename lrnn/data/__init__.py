"""Dataset readers (each converts to eV and Å on load) and deterministic splits."""

from lrnn.data.readers import (
    arrays_sha256,
    read,
    read_extxyz,
    read_lode_h5,
    read_rmd17,
    read_runner,
    read_sgdml,
)
from lrnn.data.splits import split_indices, train_val_test

__all__ = ["arrays_sha256", "read", "read_rmd17", "read_sgdml", "read_extxyz", "read_runner", "read_lode_h5",
           "split_indices", "train_val_test"]
