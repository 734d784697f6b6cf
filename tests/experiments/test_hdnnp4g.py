"""experiments/longrange/hdnnp4g.py without training: the fixed split, which columns apply to
which set, and the per-member errors (values worked by hand)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("hdnnp4g", ROOT / "experiments/longrange/hdnnp4g.py")
h4 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h4)


@pytest.mark.parametrize("n, sizes", [(128, (92, 10, 26)), (18, (12, 2, 4)), (20, (14, 2, 4))])
def test_split_is_fixed_disjoint_and_keeps_the_ablation_test_part(n, sizes):
    fit, val, test = h4.split(n)
    assert (len(fit), len(val), len(test)) == sizes  # as written in the script's docstring
    assert sorted(np.concatenate([fit, val, test]).tolist()) == list(range(n))
    # the same 20 % test part as ablation.py's rows: the last 20 % of a seed-0 permutation
    perm = np.random.default_rng(0).permutation(n)
    assert test.tolist() == sorted(perm[len(perm) - sizes[2]:].tolist())
    assert all(np.array_equal(a, b) for a, b in zip(h4.split(n), (fit, val, test)))


def test_open_boundary_terms_do_not_apply_to_periodic_cells():
    for s in ("au2_mgo", "water"):
        assert [c for c in h4.COLUMNS if h4.applies(s, c)] == ["local", "latent_coulomb", "sog", "combination",
                                                                 "latent_q"]
    assert all(h4.applies("carbon_chain", c) for c in h4.COLUMNS)


def test_errors_per_member_and_per_atom():
    # two structures of 2 and 1 atoms (one padding slot), two members
    ds = SimpleNamespace(n_atoms=np.array([2, 1]), energy=np.array([1.0, 2.0]),
                         forces=np.zeros((2, 2, 3)), mask=np.array([[True, True], [True, False]]))
    e = np.array([[3.0, 2.0], [1.0, 5.0]])  # member 0: +2 eV on 2 atoms (1 eV/atom), 0; member 1: 0, +3 eV
    f = np.zeros((2, 2, 2, 3))
    f[0, 0, 0] = [3.0, 0, 0]  # member 0: one real component off by 3 eV/Å
    f[1, 1, 1] = [9.0, 9, 9]  # member 1: only on the padding atom, which must not count
    r = h4.errors(e, f, ds, np.array([0, 1]))
    assert r["energy_mae_eV_atom"] == pytest.approx([0.5, 1.5])
    assert r["energy_rmse_eV_atom"] == pytest.approx([np.sqrt(0.5), np.sqrt(4.5)])
    assert r["force_mae_eV_A"] == pytest.approx([3 / 9, 0.0])  # 3 real atoms x 3 components
    assert r["force_rmse_eV_A"] == pytest.approx([1.0, 0.0])


def test_per_axis_k_keeps_the_reach_of_the_longest_cell_vector():
    cell = np.diag([9.0, 9.0, 26.5])
    model = {"type": "deeppot_se", "long_range": [
        {"type": "latent_coulomb", "method": "reciprocal", "k_index_max": 10},
        {"type": "sog", "method": "reciprocal", "k_index_max": 6}, {"type": "dispersion"}]}
    terms = h4.per_axis_k(model, cell)["long_range"]
    # ceil(10 * 9 / 26.5) = ceil(3.40) = 4; ceil(6 * 9 / 26.5) = ceil(2.04) = 3
    assert [t.get("k_index_max") for t in terms] == [[4, 4, 10], [3, 3, 6], None]
    assert h4.per_axis_k({"type": "deeppot_se"}, cell) == {"type": "deeppot_se"}
