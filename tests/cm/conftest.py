import jax
import pytest


@pytest.fixture(autouse=True)
def _x64():
    """float64 for every C_m test, without flipping the global flag for other tests."""
    with jax.enable_x64(True):
        yield
