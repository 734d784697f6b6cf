"""Local descriptors."""

from lrnn.descriptors.se_e2_a import env_matrix, smooth_switch

__all__ = ["env_matrix", "smooth_switch"]
