"""Bad input gets a clear error naming the problem."""

import numpy as np
import pytest

from lrnn.system import Dataset, validate_structure

POS = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.1, 0]])


def test_nan_and_inf_coordinates():
    for bad in (np.nan, np.inf):
        p = POS.copy()
        p[1, 2] = bad
        with pytest.raises(ValueError, match="non-finite.*atoms \\[1\\]"):
            validate_structure(p, [8, 1, 1])


def test_overlapping_atoms_free_and_periodic():
    p = POS.copy()
    p[2] = [0.05, 0.0, 0.0]
    with pytest.raises(ValueError, match="atoms 0 and 2 are 0.0500 Å apart"):
        validate_structure(p, [8, 1, 1])
    # across a periodic boundary: 0.02 and 4.97 in a 5 Å box are 0.05 Å apart
    q = np.array([[0.02, 1, 1], [4.97, 1, 1], [2.5, 2.5, 2.5]])
    validate_structure(q, [1, 1, 8])  # fine without a cell
    with pytest.raises(ValueError, match="overlapping"):
        validate_structure(q, [1, 1, 8], np.eye(3) * 5.0, [True] * 3)


def test_mismatched_shapes_and_species():
    with pytest.raises(ValueError, match="shapes must match"):
        validate_structure(POS, [8, 1])
    with pytest.raises(ValueError, match="positions must have shape"):
        validate_structure(POS[:, :2], [8, 1, 1])
    with pytest.raises(ValueError, match=r"species \['Au'\].*not known"):
        validate_structure(POS, [8, 1, 79], allowed=[1, 6, 7, 8])
    with pytest.raises(ValueError, match="does not match positions"):
        Dataset(np.zeros((2, 3, 3)), np.ones((2, 4)), np.zeros(2))


def test_empty_dataset_and_missing_forces():
    ds = Dataset(np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        ds.validate()
    ds = Dataset(POS[None], [8, 1, 1], [1.0])
    with pytest.raises(ValueError, match="no force labels but the force weight is non-zero"):
        ds.validate(require_forces=True)
    ds.validate()


def test_resolve_total_charge_rule():
    from lrnn.system import resolve_total_charge

    na2cl, nacl = [11, 11, 17], [11, 17, 0, 0]  # sum(Z) 39 (odd), 28 (even; padding zeros ignored)
    assert resolve_total_charge(None, nacl, True) == 0.0  # even electron count: neutral
    assert resolve_total_charge(None, na2cl, False) == 0.0  # no charge terms: the model ignores it
    with pytest.raises(ValueError, match=r"odd number of electrons.*sum of atomic numbers 39.*pass total_charge="):
        resolve_total_charge(None, na2cl, True)
    with pytest.raises(ValueError, match=r"--total-charge"):
        resolve_total_charge(None, np.array([11]), True, how="--total-charge Q")
    for q in (1, -1.0, np.float32(2.0), 0):  # an explicit value is always used, as a float
        got = resolve_total_charge(q, na2cl, True)
        assert got == float(q) and type(got) is float
    for bad in (np.nan, np.inf, "one"):
        with pytest.raises(ValueError, match="total charge must be"):
            resolve_total_charge(bad, nacl, False)
