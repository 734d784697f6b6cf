import numpy as np
import pytest

from lrnn import units


def test_published_conversion_factors():
    # CODATA 2018: 1 Hartree = 27.211386245988 eV, 1 Bohr = 0.529177210903 Å,
    # 1 eV = 23.0605 kcal/mol, 1 Hartree = 219474.63 cm^-1
    assert units.HARTREE == pytest.approx(27.211386245988)
    assert units.BOHR == pytest.approx(0.529177210903)
    assert 1.0 / units.KCAL_MOL == pytest.approx(23.0605, rel=1e-5)
    assert units.convert_energy(1.0, "Hartree", "cm-1") == pytest.approx(219474.63, rel=1e-7)
    assert units.convert_energy(1.0, "Hartree", "kcal/mol") == pytest.approx(627.5095, rel=1e-6)


def test_round_trip_and_errors():
    x = np.array([1.0, -2.5])
    np.testing.assert_allclose(units.convert_length(units.convert_length(x, "Bohr", "Å"), "Å", "Bohr"), x)
    assert units.force_factor("Hartree", "Bohr") == pytest.approx(51.42208619083232)
    with pytest.raises(ValueError, match="unknown energy unit"):
        units.energy_factor("furlong")
