"""jax-md energy functions and integrators (lrnn.md): consistency with the potential, free
and periodic cells, NVE conservation, NVT thermostats, overflow reallocation, compile
counts, bad input and NaN handling."""

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn import md

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pot(trained_checkpoint):
    import lrnn

    return lrnn.load(trained_checkpoint)


@pytest.fixture(scope="module")
def mol(paracetamol):
    return paracetamol.positions[0].copy(), paracetamol.numbers[0].copy()


@pytest.fixture(scope="module")
def nve_run(pot, mol):
    """One short NVE run shared by several tests: 0.2 fs, 200 steps, 100 K (the tiny test
    model is barely trained: it is smooth but not physical, so runs are kept short)."""
    pos, num = mol
    system = md.MDSystem(pot, pos, num)
    sim = md.Simulation(system, ensemble="nve", dt_fs=0.2, temperature_K=100.0, seed=1, log_every=5,
                        chunk_records=20)
    frame0 = sim.init()
    frames = [frame0]
    for chunk in sim.run(200):
        frames.extend(chunk)
    return system, sim, frames


def test_energy_and_forces_match_potential(pot, mol, nve_run):
    pos, num = mol
    system, sim, _ = nve_run
    ref = pot.calculate(pos, num)
    f0 = sim.init()  # the initial state holds E and F at the initial positions
    e = f0.epot
    f = np.asarray(sim.state.force)
    assert abs(e - ref["energy"]) < 1e-4  # the potential evaluates in float32, MD in float64
    np.testing.assert_allclose(f, ref["forces"], atol=2e-4)
    assert system.skin > 0 and system.S >= 1


@pytest.mark.parametrize("triclinic", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_periodic_energy_matches_potential(pot, mol, triclinic):
    pos, num = mol
    cell = np.diag([10.5, 11.0, 11.5])
    if triclinic:
        cell[1, 0] = 2.0
        cell[2, 1] = -1.5
    pos = pos - pos.mean(0) + cell.sum(0) / 2
    pos[0] += cell[0]  # an atom outside the cell: the periodic image must be found
    system = md.MDSystem(pot, pos, num, cell=cell)
    nbrs = system.allocate()
    e, g = jax.jit(jax.value_and_grad(system.energy_fn))(jnp.asarray(pos), neighbor=nbrs)
    e, f = float(e) + system.energy_offset, -np.asarray(g)
    ref = pot.calculate(pos, num, cell=cell)
    assert abs(e - ref["energy"]) < 1e-4
    np.testing.assert_allclose(f, ref["forces"], atol=2e-4)


def test_nve_conserves_energy_without_recompiling(nve_run):
    system, sim, frames = nve_run
    etot = np.array([f.etot for f in frames])
    t = np.array([f.time_fs for f in frames])
    assert t[-1] == pytest.approx(40.0) and len(frames) == 41
    assert np.all(np.isfinite(etot))
    temps = np.array([f.temperature for f in frames])
    assert temps[0] == pytest.approx(100.0, rel=1e-9)
    assert np.std(etot) < 0.05 * np.std([f.ekin for f in frames])
    assert sim.compilations() == 1  # 4 chunks, one compilation
    assert system.reallocations == 0


def test_nve_energy_error_is_second_order_in_dt(pot, mol, nve_run):
    """Velocity Verlet with exact gradients: halving dt divides the energy error by 4."""
    system, _, frames = nve_run
    sim = md.Simulation(system, ensemble="nve", dt_fs=0.1, temperature_K=100.0, seed=1, log_every=5,
                        chunk_records=20)
    half = [sim.init()] + [f for ch in sim.run(400) for f in ch]
    assert half[-1].time_fs == pytest.approx(frames[-1].time_fs) and len(half) == 81
    assert sim.compilations() == 1  # dt is a runtime argument: the chunk of nve_run is reused
    err = np.abs(np.array([f.etot for f in frames]) - frames[0].etot).max()
    err_half = np.abs(np.array([f.etot for f in half]) - half[0].etot).max()
    assert 3.5 < err / err_half < 4.5, (err, err_half)


@pytest.mark.parametrize("thermostat", ["langevin", pytest.param("nose-hoover", marks=pytest.mark.slow)])
def test_nvt_thermostats(pot, mol, thermostat):
    pos, num = mol
    system = md.MDSystem(pot, pos, num)
    sim = md.Simulation(system, ensemble="nvt", thermostat=thermostat, dt_fs=0.5, temperature_K=300.0,
                        friction=0.05, tau_fs=20.0, seed=3, log_every=10, chunk_records=20)
    sim.init(temperature_K=20.0)
    temps = np.array([f.temperature for ch in sim.run(200) for f in ch])
    assert np.all(np.isfinite(temps))
    assert temps[-10:].mean() > 80.0  # heated from 20 K towards 300 K


def test_overflow_is_detected_and_reallocated(pot, mol, nve_run, caplog):
    pos, num = mol
    _, _, ref_frames = nve_run
    system = md.MDSystem(pot, pos, num)
    sim = md.Simulation(system, ensemble="nve", dt_fs=0.2, temperature_K=100.0, seed=1, log_every=5,
                        chunk_records=20)
    sim.init()
    # sabotage: a jax-md list allocated for a stretched molecule is too small, and the
    # species blocks are too narrow
    sim.nbrs = system.neighbor_fn.allocate(jnp.asarray((pos - pos.mean(0)) * 2.0 + pos.mean(0)))
    system.S = 2
    with caplog.at_level(logging.WARNING, logger="lrnn.md"):
        frames = [f for ch in sim.run(100) for f in ch]
    assert system.reallocations >= 1
    assert any("overflow" in r.getMessage() for r in caplog.records)
    ref = np.array([f.etot for f in ref_frames[1:21]])
    assert len(frames) == 20
    np.testing.assert_allclose([f.etot for f in frames], ref, atol=1e-8)


def test_energy_fn_is_nan_when_blocks_overflow(pot, mol):
    pos, num = mol
    system = md.MDSystem(pot, pos, num)
    nbrs = system.allocate()
    assert not bool(system.overflowed(nbrs))
    assert bool(system.overflowed(nbrs, 1))
    assert np.isnan(float(jax.jit(system.energy_fn_for(1))(jnp.asarray(pos), neighbor=nbrs)))


def test_nan_during_md_stops_with_last_good_frame(pot, mol, tmp_path):
    import ase.io
    from ase import Atoms

    pos, num = mol
    r0 = jnp.asarray(pos[0])

    def bad_term(R):  # NaN energy and forces once atom 0 moved 0.03 Å
        return jnp.where(jnp.linalg.norm(R[0] - r0) > 0.03, jnp.nan, 0.0) * jnp.sum(R)

    atoms = Atoms(numbers=num, positions=pos)
    with pytest.raises(md.NonFiniteError, match="last good frame") as err:
        md.run_md(pot, atoms, dt_fs=0.5, steps=400, temperature_K=600, log_every=2, traj_every=10, traj=tmp_path / "t.extxyz", log_path=tmp_path / "t.csv", plot=tmp_path / "t.png",
                  progress=False, extra_energy=bad_term)
    good = err.value.frame
    assert good is not None and np.all(np.isfinite(good.positions)) and good.step > 0
    last = ase.io.read(tmp_path / "t.last_good.extxyz")
    np.testing.assert_allclose(last.positions, good.positions, atol=1e-7)  # extxyz keeps 8 decimals
    assert last.info["step"] == good.step
    rows = np.genfromtxt(tmp_path / "t.csv", delimiter=",", names=True)
    assert np.all(np.isfinite(rows["etot_eV"])) and rows["time_fs"][-1] <= good.time_fs
    assert (tmp_path / "t.png").exists()


def test_bad_input(pot, mol):
    pos, num = mol
    bad = num.copy()
    bad[0] = 26
    with pytest.raises(ValueError, match="not known to the model"):
        md.MDSystem(pot, pos, bad)
    close = pos.copy()
    close[1] = close[0] + [0.05, 0, 0]
    with pytest.raises(ValueError, match="overlapping"):
        md.MDSystem(pot, close, num)
    with pytest.raises(ValueError, match="no cell"):
        md.MDSystem(pot, pos, num, pbc=True)
    with pytest.raises(ValueError, match="cell too small"):
        md.MDSystem(pot, pos, num, cell=np.eye(3) * 6.0)
    import copy

    periodic_model = copy.copy(pot)
    periodic_model.meta = dict(pot.meta, periodic=True)
    with pytest.raises(ValueError, match="needs a cell"):
        md.MDSystem(periodic_model, pos, num)
    nan = pos.copy()
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        md.MDSystem(pot, nan, num)
    with pytest.raises(ValueError, match="time step"):
        md.Simulation(md.MDSystem(pot, pos, num), dt_fs=0.0)


def test_total_charge_rule_and_open_reciprocal(lc_pot):
    from tests.conftest import nacl_cluster, nacl_potential

    pos, num = nacl_cluster([11, 17, 11, 17, 11])  # sum(Z) = 67: charged or a radical
    with pytest.raises(ValueError, match=r"odd number of electrons.*pass total_charge="):
        md.MDSystem(lc_pot, pos, num)
    assert md.MDSystem(lc_pot, pos[:4], num[:4]).total_charge == 0.0  # even: neutral
    system = md.MDSystem(lc_pot, pos, num, total_charge=1.0)
    assert system.total_energy(system.positions0) == pytest.approx(
        lc_pot.calculate(pos, num, total_charge=1.0)["energy"], abs=1e-9)  # the charge reaches energy_fn
    recip = nacl_potential(long_range=[{"type": "latent_coulomb", "sigma": 0.5, "fit": [4], "method": "reciprocal"}])
    with pytest.raises(ValueError, match="'reciprocal' needs a periodic cell.*use method: direct or fmm"):
        md.MDSystem(recip, pos[:4], num[:4])


def test_units_and_initial_momenta():
    assert md.fs_to_internal(10.1805) == pytest.approx(1.0, rel=1e-4)
    m = md.masses_of([1, 6, 8])
    assert m[1] == pytest.approx(12.011, rel=1e-4)
    p = md.initial_momenta(np.r_[m, m], 300.0, seed=0)
    np.testing.assert_allclose(p.sum(0), 0.0, atol=1e-12)
    ekin = 0.5 * np.sum(p ** 2 / np.r_[m, m][:, None])
    assert 2 * ekin / (3 * 6 * md.kB()) == pytest.approx(300.0)
    d = md.energy_drift([0, 1000, 2000], [1.0, 1.002, 1.004], 2)
    assert d["drift_meV_per_atom_per_ps"] == pytest.approx(1.0)
