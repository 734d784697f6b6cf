"""experiments/xtb_data/gen_xtb.py without tblite: Langevin MD with EMT on a Cu cluster.
A run killed midway resumes with no duplicated or lost frame and reproduces an uninterrupted
run; a failing calculator is retried, not written as NaN; the merged npz loads in eV, Å."""

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

from lrnn.data import read

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gen_xtb", ROOT / "experiments/xtb_data/gen_xtb.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

START = Icosahedron("Cu", 2)  # 13 atoms
MD = dict(temperature_K=500.0, timestep_fs=2.0, stride_fs=10.0, friction_per_fs=0.01, seed=[7, 0],
          equilibrate_fs=20.0)
SETTINGS = {"method": "EMT", "molecule": "Cu13"}


def run(out, n, make_calc=EMT):
    return gen.run_shard(out, START, make_calc, n, SETTINGS, log=lambda m: None, **MD)


def test_resume_equals_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(a, 6) == 6
    assert run(b, 3) == 3
    # simulate a kill after a frame was written but before its state was saved, mid-write
    with open(b / "frames.extxyz", "a") as fh:
        fh.write((a / "frames.extxyz").read_text()[:500])
    assert run(b, 6) == 6
    assert (a / "frames.extxyz").read_text() == (b / "frames.extxyz").read_text()
    fa, fb = gen.read_frames(a), gen.read_frames(b)
    steps = [f.info["step"] for f in fb]
    assert steps == [15, 20, 25, 30, 35, 40]  # equilibration 10 steps, stride 5, no duplicates or gaps
    for x, y in zip(fa, fb):
        assert np.array_equal(x.positions, y.positions)
        assert x.get_potential_energy() == y.get_potential_energy()
    assert run(b, 6) == 6  # already complete: nothing appended
    assert len(gen.read_frames(b)) == 6
    assert json.loads((b / "settings.json").read_text())["md"]["friction_per_fs"] == 0.01


class Remembering(EMT):
    """EMT whose forces depend, at the 1e-9 level, on how many results it has computed since
    its last reset: a stand-in for tblite, which starts every SCF from its last wavefunction."""

    def reset(self):
        super().reset()
        self.n_calls = 0

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.n_calls = getattr(self, "n_calls", 0) + 1
        self.results["forces"] = self.results["forces"] * (1 + 1e-9 * (self.n_calls % 7))


def test_resume_is_exact_with_a_calculator_that_remembers(tmp_path):
    """A resumed run starts a new calculator; the frames must not depend on that."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(a, 8, Remembering) == 8
    assert run(b, 3, Remembering) == 3 and run(b, 8, Remembering) == 8
    assert (a / "frames.extxyz").read_text() == (b / "frames.extxyz").read_text()
    state = {k: json.loads((d / "state.json").read_text()) for k, d in (("a", a), ("b", b))}
    assert state["a"]["positions"] == state["b"]["positions"] and state["a"]["momenta"] == state["b"]["momenta"]


def test_calculator_failure_is_retried(tmp_path):
    calls = {"n": 0}

    class Flaky(EMT):
        def calculate(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 30:
                raise RuntimeError("SCF did not converge")
            super().calculate(*args, **kwargs)

    logged = []
    n = gen.run_shard(tmp_path, START, Flaky, 4, SETTINGS, log=logged.append, **MD)
    assert n == 4 and any("failure 1" in m for m in logged)
    frames = gen.read_frames(tmp_path)
    assert [f.info["step"] for f in frames] == [15, 20, 25, 30]
    assert all(np.isfinite(f.get_forces()).all() for f in frames)
    assert json.loads((tmp_path / "state.json").read_text())["failures"] == 1


def test_collect_loads_with_lrnn_in_ev(tmp_path):
    shards = [tmp_path / "s0", tmp_path / "s1"]
    run(shards[0], 3)
    gen.run_shard(shards[1], START, EMT, 2, SETTINGS, log=lambda m: None, **dict(MD, seed=[7, 1]))
    out = tmp_path / "merged.npz"
    summary = gen.collect(shards, out, name="Cu13 EMT")
    assert summary["n_frames"] == 5
    ds = read(out)
    frames = gen.read_frames(shards[0]) + gen.read_frames(shards[1])
    e = np.array([f.get_potential_energy() for f in frames])
    f = np.stack([f.get_forces() for f in frames])
    np.testing.assert_allclose(ds.energy, e, rtol=0, atol=1e-9)  # eV
    np.testing.assert_allclose(ds.forces, f, rtol=1e-6, atol=1e-6)  # eV/Å (float32 storage)
    np.testing.assert_allclose(ds.positions, np.stack([x.positions for x in frames]), atol=1e-5)
    assert (ds.numbers == 29).all()
    d = np.load(out)
    assert str(d["e_unit"]) == "kcal/mol" and d["R"].dtype == np.float32
    np.testing.assert_allclose(d["E"], e / gen.KCAL)
    # the digest of the stored arrays: the same for the same frames, another for other frames
    assert summary["arrays_sha256"] == gen.arrays_sha256(d)
    assert gen.collect(shards, tmp_path / "again.npz", name="x")["arrays_sha256"] == summary["arrays_sha256"]
    part = [gen.collect([s], tmp_path / f"part{i}.npz", name="x")["arrays_sha256"] for i, s in enumerate(shards)]
    assert part[0] != summary["arrays_sha256"]
    assert summary["shard_arrays_sha256"] == part  # each shard's digest is that of the shard alone
    gen.record_collected(summary, "cu13", "500K", out_dir=tmp_path / "results")
    rec = json.loads((tmp_path / "results/cu13_500K_summary.json").read_text())
    assert rec["n_frames"] == 5 and rec["F_rms_eV_A"] == summary["F_rms_eV_A"] and "collected" in rec
    settings = json.loads((tmp_path / "results/cu13_500K_settings.json").read_text())
    assert [s["md"]["seed"] for s in settings] == [[7, 0], [7, 1]]  # one record per shard


class ScaledForces(EMT):
    """EMT with forces 10 % too large: no longer the gradient of its energy."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = 1.1 * self.results["forces"]


def test_check_labels_finds_forces_that_are_not_the_energy_gradient(tmp_path):
    run(tmp_path / "s0", 4)
    out = tmp_path / "merged.npz"
    gen.collect([tmp_path / "s0"], out, name="Cu13 EMT")
    ok = gen.check_labels(out, 2, make_calc=EMT)
    assert len(ok["rows"]) == 4 and ok["rms_F_dot_u_eV_A"] > 0.05
    # EMT's forces are its energy gradient: the O(h^2) central difference agrees to 1e-4 of F.u
    assert ok["max_abs_fd_minus_stored_force_eV_A"] < 1e-4 * ok["rms_F_dot_u_eV_A"] + 1e-5
    assert ok["max_abs_E_recomputed_minus_stored_eV"] < 1e-4  # positions stored as float32
    # labels made by a calculator whose forces are off by 10 %: the check sees it
    bad_dir = tmp_path / "bad"
    gen.run_shard(bad_dir, START, ScaledForces, 4, SETTINGS, log=lambda m: None, **MD)
    gen.collect([bad_dir], tmp_path / "bad.npz", name="Cu13 scaled")
    bad = gen.check_labels(tmp_path / "bad.npz", 2, make_calc=EMT)
    assert bad["max_abs_fd_minus_stored_force_eV_A"] > 0.02 * bad["rms_F_dot_u_eV_A"]


@pytest.mark.parametrize("molecule", ["ac_ala3_nhme", "stachyose"])
def test_committed_sets_are_the_sets_their_summaries_name(molecule):
    """The thesis table's and active learning's records name these sets by their digest."""
    summary = json.loads((ROOT / f"experiments/results/xtb_data/{molecule}_500K_summary.json").read_text())
    d = np.load(ROOT / summary["file"])
    assert hashlib.sha256(b"".join(np.ascontiguousarray(d[k]).tobytes() for k in "RzEF")).hexdigest() == \
        summary["arrays_sha256"]
    assert len(d["E"]) == summary["n_frames"] == 6000 and d["R"].shape[1] == summary["n_atoms"]
