"""Training: losses with DeePMD prefactor schedules, the optax loop, metrics, plots."""

from lrnn.train.config import TrainConfig, load_config
from lrnn.train.trainer import train

__all__ = ["TrainConfig", "load_config", "train"]
