"""Each reader against a hand-checked value, with units."""

import numpy as np
import pytest

from lrnn import units
from lrnn.data import (
    read,
    read_extxyz,
    read_lode_h5,
    read_rmd17,
    read_runner,
    read_sgdml,
    train_val_test,
)
from tests.conftest import shared_file  # noqa: F401  (importlib mode resolves via rootdir)


def test_rmd17_embedded_kcal_to_ev(paracetamol):
    # rmd17_paracetamol_train_01.npz, structure 0: E = -322831.23013097 kcal/mol
    assert paracetamol.energy[0] == pytest.approx(-322831.23013097 * 0.0433641043, rel=1e-12)
    assert paracetamol.energy[0] == pytest.approx(-13999.2871, abs=1e-3)  # eV
    assert paracetamol.elements == [1, 6, 7, 8]
    assert paracetamol.positions.shape == (1000, 20, 3)
    assert paracetamol.forces is not None


def test_rmd17_shared_aspirin():
    p = shared_file("rmd17/rmd17_aspirin_train_01.npz")
    ds = read_rmd17(p)
    raw = np.load(p)
    np.testing.assert_allclose(ds.forces[3], raw["forces"][3] * units.KCAL_MOL)
    assert len(ds) == 1000 and ds.n_max == 21


def test_sgdml_npz_keys_and_units(tmp_path):
    f = tmp_path / "md.npz"
    R = np.random.default_rng(0).normal(size=(3, 2, 3)) * 2
    np.savez(f, R=R, z=np.array([1, 8]), E=np.array([[1.0], [2.0], [3.0]]), F=np.ones((3, 2, 3)))
    ds = read_sgdml(f)
    assert ds.energy[1] == pytest.approx(2.0 * 0.0433641043)  # kcal/mol -> eV
    assert ds.forces[0, 0, 0] == pytest.approx(0.0433641043)
    np.savez(f, R=R * 10, z=np.array([1, 8]), E=np.ones(3), e_unit="eV", r_unit="nm")
    ds = read_sgdml(f)
    np.testing.assert_allclose(ds.positions, R * 100)
    assert ds.forces is None
    # the spelling sGDML's own tools write into MD17/MD22 files
    np.savez(f, R=R, z=np.array([1, 8]), E=np.ones(3), e_unit="kcal/mol", r_unit="Ang")
    np.testing.assert_allclose(read_sgdml(f).positions, R)


RUNNER = """begin
comment test
lattice 10.0 0.0 0.0
lattice 0.0 10.0 0.0
lattice 0.0 0.0 10.0
atom 1.0 2.0 3.0 O -0.8 0.0 0.1 0.0 0.0
atom 2.0 2.0 3.0 H 0.4 0.0 -0.1 0.0 0.0
atom 1.0 3.0 3.0 H 0.4 0.0 0.0 0.0 0.0
energy -76.5
charge 0.0
end
"""


def test_runner_bohr_hartree(tmp_path):
    f = tmp_path / "input.data"
    f.write_text(RUNNER)
    ds = read_runner(f)
    assert ds.energy[0] == pytest.approx(-76.5 * 27.211386245988)  # Hartree -> eV
    assert ds.positions[0, 1, 0] == pytest.approx(2.0 * 0.529177210903)  # Bohr -> Å
    assert ds.forces[0, 0, 0] == pytest.approx(0.1 * 27.211386245988 / 0.529177210903)  # Ha/Bohr -> eV/Å
    assert ds.cell[0, 0, 0] == pytest.approx(5.29177210903) and ds.is_periodic
    np.testing.assert_allclose(ds.charges[0], [-0.8, 0.4, 0.4])
    f.write_text(RUNNER[:200])
    with pytest.raises(ValueError, match="truncated"):
        read_runner(f)


def test_runner_shared_carbon_chain():
    ds = read_runner(shared_file("hdnnp4g/Carbon_chain_4G_input.data"))
    assert len(ds) == 128
    assert ds.energy[0] == pytest.approx(-381.614393065 * units.HARTREE)
    assert set(np.unique(ds.total_charge)) == {0.0, 1.0}  # C10H2 and C10H3+


def test_lode_h5_shared():
    ds = read_lode_h5(shared_file("lode_dimers/dimer2_CA_data.h5"))
    assert len(ds) == 13
    assert ds.energy[0] == pytest.approx(-9914.7185178)  # eV, unchanged
    assert ds.elements == [1, 6, 7]


def test_extxyz_md22_kcal(tmp_path):
    p = shared_file("md22/md22_Ac-Ala3-NHMe_5frames.xyz")
    ds = read_extxyz(p, energy_unit="kcal/mol")
    assert ds.energy[0] == pytest.approx(-620726.002662 * 0.0433641043)
    assert ds.forces[0, 0, 0] == pytest.approx(1.07102 * 0.0433641043)


def test_extxyz_roundtrip(tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    a = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    a.calc = SinglePointCalculator(a, energy=-2.0, forces=np.arange(9.0).reshape(3, 3))
    write(tmp_path / "w.extxyz", [a, a])
    ds = read(tmp_path / "w.extxyz", energy_unit="Hartree")
    assert ds.energy[1] == pytest.approx(-2.0 * units.HARTREE)
    assert ds.forces[0, 2, 2] == pytest.approx(8.0 * units.HARTREE)


def test_splits_are_deterministic_and_disjoint(paracetamol):
    a = train_val_test(paracetamol, 100, 10, 20, seed=3)
    b = train_val_test(paracetamol, 100, 10, 20, seed=3)
    c = train_val_test(paracetamol, 100, 10, 20, seed=4)
    np.testing.assert_array_equal(a[0].energy, b[0].energy)
    assert not np.array_equal(a[0].energy, c[0].energy)
    e = [set(x.energy.tolist()) for x in a]
    assert not (e[0] & e[1]) and not (e[0] & e[2]) and not (e[1] & e[2])
    with pytest.raises(ValueError, match="need 1200"):
        train_val_test(paracetamol, 1000, 100, 100)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="npz"):
        read(bad)
