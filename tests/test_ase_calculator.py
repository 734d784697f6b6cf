"""The ASE calculator: agreement with the potential, stress, size buckets (compile counts),
optimisers and MD, step-by-step agreement with jax-md, bad input."""

import numpy as np
import pytest
from ase import Atoms

from lrnn.ase_calculator import LrnnCalculator


@pytest.fixture(scope="module")
def pot(trained_checkpoint):
    import lrnn

    return lrnn.load(trained_checkpoint)


@pytest.fixture(scope="module")
def calc(pot):
    return LrnnCalculator(pot)


@pytest.fixture()
def atoms(paracetamol):
    return Atoms(numbers=paracetamol.numbers[0], positions=paracetamol.positions[0])


def test_energy_forces_match_potential(pot, calc, atoms, trained_checkpoint):
    atoms.calc = calc
    ref = pot.calculate(atoms.positions, atoms.numbers)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=2e-4)
    # from a checkpoint path, float32 evaluation
    c32 = LrnnCalculator(str(trained_checkpoint), precision="float32")
    assert c32.get_potential_energy(atoms) == pytest.approx(ref["energy"], abs=1e-5)


def test_stress_matches_finite_differences(calc, atoms):
    cell = np.array([[10.5, 0, 0], [1.0, 11.0, 0], [0, 0.5, 11.5]])
    atoms.set_cell(cell)
    atoms.pbc = True
    atoms.positions += cell.sum(0) / 2 - atoms.positions.mean(0)
    atoms.calc = calc
    s = atoms.get_stress()
    s_num = calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(s, s_num, atol=1e-6)
    with pytest.raises(Exception, match="periodic"):
        atoms.pbc = False
        atoms.get_stress()


def test_size_buckets_avoid_recompiles(calc, paracetamol):
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    a = Atoms(numbers=num, positions=pos)
    a.calc = calc
    a.get_forces()
    c0 = calc.compilations
    for k in range(20, 16, -1):  # 20, 19, 18, 17 atoms: one bucket (24)
        a = Atoms(numbers=num[:k], positions=pos[:k])
        a.calc = calc
        a.get_forces()
        a.positions += 0.01
        a.get_forces()
    assert calc.compilations == c0
    for i in range(3):  # moving configurations of other frames: still no recompile
        a = Atoms(numbers=paracetamol.numbers[i + 1], positions=paracetamol.positions[i + 1])
        a.calc = calc
        a.get_potential_energy()
    assert calc.compilations == c0
    a = Atoms(numbers=num[:12], positions=pos[:12])  # 12 atoms: bucket 16, one more compile
    a.calc = calc
    a.get_potential_energy()
    assert calc.compilations == c0 + 1


def test_optimiser_and_ase_md(calc, atoms):
    from ase import units
    from ase.md.langevin import Langevin
    from ase.optimize import BFGS

    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    BFGS(atoms, maxstep=0.05, logfile=None).run(fmax=0.05, steps=8)
    assert atoms.get_potential_energy() < e0
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False, logfile=None)
    c0 = calc.compilations
    dyn.run(10)
    assert np.isfinite(atoms.get_potential_energy())
    assert calc.compilations == c0


def test_ase_and_jax_md_agree_step_by_step(pot, calc, atoms):
    """Same initial state, same velocity Verlet: ASE + LrnnCalculator vs jax-md, 100 steps."""
    from ase.md.verlet import VelocityVerlet

    from lrnn import md

    system = md.MDSystem(pot, atoms.positions, atoms.numbers)
    sim = md.Simulation(system, ensemble="nve", dt_fs=0.5, log_every=1, chunk_records=20)
    p0 = md.initial_momenta(system.masses, 300.0, seed=7)
    f0 = sim.init(atoms.positions, momenta=p0)
    frames = [f0] + [f for ch in sim.run(100) for f in ch]
    atoms.set_masses(system.masses)
    atoms.set_momenta(p0)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=sim.dt, logfile=None)
    ase_e = [(atoms.get_potential_energy(), atoms.get_kinetic_energy())]
    for _ in range(100):
        dyn.run(1)
        ase_e.append((atoms.get_potential_energy(), atoms.get_kinetic_energy()))
    ase_e = np.array(ase_e)
    jmd = np.array([(f.epot, f.ekin) for f in frames])
    assert len(jmd) == 101
    diff = np.abs(ase_e - jmd).max()
    assert diff < 1e-6, diff
    np.testing.assert_allclose(atoms.positions, frames[-1].positions, atol=1e-8)


def test_bad_input(pot, calc, atoms):
    import copy

    bad = atoms.copy()
    bad.numbers[0] = 26
    bad.calc = calc
    with pytest.raises(ValueError, match="not known to the model"):
        bad.get_potential_energy()
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.0, 0.05, 0.0]
    close.calc = calc
    with pytest.raises(ValueError, match="overlapping"):
        close.get_potential_energy()
    nocell = atoms.copy()
    nocell.pbc = True
    nocell.calc = calc
    with pytest.raises(ValueError, match="cell"):
        nocell.get_potential_energy()
    periodic_model = copy.copy(pot)
    periodic_model.meta = dict(pot.meta, periodic=True)
    needs = atoms.copy()
    needs.calc = LrnnCalculator(periodic_model)
    with pytest.raises(ValueError, match="needs a cell"):
        needs.get_potential_energy()


def test_total_charge_from_atoms_info(lc_pot):
    from tests.conftest import nacl_cluster

    pos, num = nacl_cluster([11, 17, 11, 17, 11])  # sum(Z) = 67: charged or a radical
    calc = LrnnCalculator(lc_pot)  # a latent-Coulomb model: its energy depends on the charge
    atoms = Atoms(numbers=num, positions=pos, calculator=calc)
    with pytest.raises(ValueError, match=r'odd number of electrons.*atoms\.info\["charge"\]'):
        atoms.get_potential_energy()
    atoms.info["charge"] = 1
    e1 = atoms.get_potential_energy()
    atoms.info["charge"] = 0  # same positions, new charge: recalculated, not the cached result
    e0 = atoms.get_potential_energy()
    assert np.isfinite(e1) and abs(e1 - e0) > 1e-6
    # an even electron count without a charge is neutral, bit for bit
    even = Atoms(numbers=num[:4], positions=pos[:4], calculator=calc)
    e_none = even.get_potential_energy()
    even.info["charge"] = 0.0
    assert even.get_potential_energy() == e_none
    # the constructor's total_charge is the fallback when atoms.info has none
    bare = Atoms(numbers=num, positions=pos, calculator=LrnnCalculator(lc_pot, total_charge=1.0))
    assert bare.get_potential_energy() == pytest.approx(e1, abs=1e-12)


def test_reciprocal_term_on_open_atoms_raises():
    from tests.conftest import nacl_cluster, nacl_potential

    pot = nacl_potential(long_range=[{"type": "latent_coulomb", "sigma": 0.5, "fit": [4], "method": "reciprocal"}])
    pos, num = nacl_cluster([11, 17])
    atoms = Atoms(numbers=num, positions=pos, calculator=LrnnCalculator(pot))
    with pytest.raises(ValueError, match="'reciprocal' needs a periodic cell.*use method: direct or fmm"):
        atoms.get_potential_energy()
