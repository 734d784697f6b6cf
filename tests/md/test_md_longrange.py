"""jax-md with O(N) long-range terms: the FMM plans travel in the integrator state, are
re-planned when atoms leave their leaves, and the trajectory is the one the ASE calculator
(through :class:`lrnn.potential.Potential`) gives."""

import numpy as np
import pytest
from ase import Atoms

from lrnn import md, plans
from lrnn.ase_calculator import LrnnCalculator

MODEL = {"rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8], "axis_neurons": 2, "fit": [8], "fmm_order": 5,
         "fmm_min_atoms": 150, "long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [8], "method": "fmm"}]}


def cluster(n=360, seed=5, density=0.05, dmin=1.5):
    """Random open cluster of H and O with no contact closer than ``dmin`` Å."""
    rng = np.random.default_rng(seed)
    side = (n / density) ** (1 / 3)
    pos = [rng.uniform(0, side, 3)]
    while len(pos) < n:
        x = rng.uniform(0, side, 3)
        if np.min(np.linalg.norm(np.asarray(pos) - x, axis=1)) > dmin:
            pos.append(x)
    pos = np.asarray(pos)
    return pos, np.where(np.arange(n) % 3 == 0, 8, 1)


@pytest.fixture(scope="module")
def fmm_pot():
    return md.untrained_potential([1, 8], MODEL, seed=3, dtype="float64", output_scale=0.05)


def small_cluster():
    pos, species = cluster(n=180, density=0.03, dmin=2.0)
    species[:] = 8  # heavy atoms: no collisions in an untrained model
    return pos, species


def test_plans_flag_atoms_that_leave_their_leaves(fmm_pot):
    pos, _ = small_cluster()
    p = plans.allocate(fmm_pot.config, pos)
    assert p.fmm is not None and p.sog is None and not bool(p.did_overflow)
    assert not bool(plans.update(p, pos + 1e-3).did_overflow)
    far = pos.copy()
    far[0] += 5.0  # more than a leaf side
    flagged = plans.update(p, far)
    assert bool(flagged.did_overflow) and bool(plans.update(flagged, pos).did_overflow)  # sticky
    assert plans.needs_replan(p, far) and not plans.needs_replan(p, pos)
    assert plans.allocate(fmm_pot.config, pos[:100]).empty  # below fmm_min_atoms: exact sums
    assert plans.allocate(fmm_pot.config, pos, cell=np.eye(3) * 40).empty  # periodic: no FMM


@pytest.mark.parametrize("n_steps, temperature_K", [(40, 1500.0), pytest.param(200, 600.0, marks=pytest.mark.slow)])
def test_jax_md_with_fmm_plans_matches_ase_step_by_step(n_steps, temperature_K):
    """Velocity Verlet, jax-md (plans carried and re-planned inside the run) against ASE +
    LrnnCalculator (plans of the Potential): the same trajectory to 1e-6 eV at every step,
    both re-planning on the way (measured: 200 steps at 600 K, 4 and 5 re-plans, 2e-11 eV)."""
    from ase.md.verlet import VelocityVerlet

    pos, species = small_cluster()
    fmm_pot = md.untrained_potential([1, 8], MODEL, seed=3, dtype="float64", output_scale=0.05)
    system = md.MDSystem(fmm_pot, pos, species)
    sim = md.Simulation(system, ensemble="nve", dt_fs=0.5, log_every=1, chunk_records=50)
    p0 = md.initial_momenta(system.masses, temperature_K, seed=7)
    f0 = sim.init(pos, momenta=p0)
    assert sim.plans.fmm is not None
    frames = [f0] + [f for ch in sim.run(n_steps) for f in ch]
    assert system.replans >= 1  # atoms left their leaves along the way
    assert sim.compilations() == 1 + system.reallocations  # re-plans keep the shapes; neighbour growth may not
    calc_pot = md.untrained_potential([1, 8], MODEL, seed=3, dtype="float64", output_scale=0.05)
    atoms = Atoms(numbers=species, positions=pos)
    atoms.set_masses(system.masses)
    atoms.set_momenta(p0)
    atoms.calc = LrnnCalculator(calc_pot)
    dyn = VelocityVerlet(atoms, timestep=sim.dt, logfile=None)
    ase_e = [(atoms.get_potential_energy(), atoms.get_kinetic_energy())]
    for _ in range(n_steps):
        dyn.run(1)
        ase_e.append((atoms.get_potential_energy(), atoms.get_kinetic_energy()))
    assert calc_pot.fmm_replans >= 2
    jmd = np.array([(f.epot, f.ekin) for f in frames])
    assert len(jmd) == n_steps + 1
    diff = np.abs(np.asarray(ase_e) - jmd).max(axis=0)
    assert np.all(diff < 1e-6), diff
    np.testing.assert_allclose(atoms.positions, frames[-1].positions, atol=1e-8)


def test_stale_plans_give_nan_energy_not_a_wrong_one(fmm_pot):
    pos, species = small_cluster()
    system = md.MDSystem(fmm_pot, pos, species)
    nbrs, p = system.allocate(pos), system.allocate_plans(pos)
    e = system.total_energy(pos, nbrs, p)
    assert np.isfinite(e)
    moved = pos.copy()
    moved[3] += 3.0
    assert np.isnan(system.total_energy(moved, system.allocate(moved), p))
    assert np.isfinite(system.total_energy(moved))  # fresh plans
