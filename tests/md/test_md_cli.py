"""The `lrnn md` command (lrnn.md_cli.main): outputs, interrupt safety, error messages."""

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def structure(paracetamol, tmp_path):
    import ase.io
    from ase import Atoms

    path = tmp_path / "paracetamol.xyz"
    ase.io.write(path, Atoms(numbers=paracetamol.numbers[0], positions=paracetamol.positions[0]))
    return path


def test_md_command_writes_trajectory_log_and_plot(trained_checkpoint, structure, tmp_path, capsys):
    import ase.io

    from lrnn.md_cli import main

    out = tmp_path / "run"
    rc = main([str(trained_checkpoint), str(structure), "--steps", "60", "--dt", "0.5", "--temperature", "200",
               "--log-every", "5", "--traj-every", "20", "--output", str(out), "--log", str(tmp_path / "e.csv"),
               "--no-progress"])
    assert rc == 0
    lines = (tmp_path / "e.csv").read_text().splitlines()
    assert lines[0] == "time_fs,epot_eV,ekin_eV,etot_eV,temperature_K"
    data = np.genfromtxt(tmp_path / "e.csv", delimiter=",", names=True)
    assert len(data) == 13 and data["time_fs"][-1] == pytest.approx(30.0)
    np.testing.assert_allclose(data["etot_eV"], data["epot_eV"] + data["ekin_eV"], atol=1e-8)
    assert data["temperature_K"][0] == pytest.approx(200.0, rel=1e-6)
    frames = ase.io.read(out / "trajectory.extxyz", index=":")
    assert len(frames) == 4 and frames[-1].info["time_fs"] == pytest.approx(30.0)
    assert (out / "energy.png").stat().st_size > 1000
    assert '"steps": 60' in capsys.readouterr().out


def test_interrupt_keeps_files_readable(trained_checkpoint, structure, tmp_path):
    import ase.io

    from lrnn import md

    calls = []

    def interrupt(frames):
        calls.append(frames[-1].step)
        if len(calls) == 2:
            raise KeyboardInterrupt

    res = md.run_md(str(trained_checkpoint), structure, ensemble="nvt", thermostat="langevin", friction=0.05,
                    steps=10_000, dt_fs=0.5, log_every=2, traj_every=10, traj=tmp_path / "t.extxyz",
                    log_path=tmp_path / "t.csv", plot=tmp_path / "t.png", progress=False, callback=interrupt)
    assert res.interrupted and res.steps == 80
    data = np.genfromtxt(tmp_path / "t.csv", delimiter=",", names=True)
    assert len(data) == 41 and np.all(np.isfinite(data["etot_eV"]))
    assert len(ase.io.read(tmp_path / "t.extxyz", index=":")) == 9
    assert (tmp_path / "t.png").exists()


@pytest.mark.parametrize("case", ["unknown", "overlap", "pbc-no-cell", "missing", "steps"])
def test_md_command_bad_input(trained_checkpoint, paracetamol, tmp_path, capsys, case):
    import ase.io
    from ase import Atoms

    from lrnn.md_cli import main

    num, pos = paracetamol.numbers[0].copy(), paracetamol.positions[0].copy()
    extra = []
    if case == "unknown":
        num[2] = 79
    elif case == "overlap":
        pos[4] = pos[3] + 0.02
    atoms = Atoms(numbers=num, positions=pos)
    if case == "pbc-no-cell":
        atoms.pbc = True
    path = tmp_path / "s.extxyz"
    ase.io.write(path, atoms)
    if case == "missing":
        path = tmp_path / "nope.xyz"
    if case == "steps":
        extra = ["--steps", "-5"]
    rc = main([str(trained_checkpoint), str(path), "--output", str(tmp_path / "o"), "--no-progress"] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and "lrnn md: error:" in err
    expect = {"unknown": "not known", "overlap": "overlapping", "pbc-no-cell": "cell", "missing": "not found",
              "steps": "--steps"}[case]
    assert expect in err


def test_md_command_total_charge(lc_pot, tmp_path, capsys, monkeypatch):
    import ase.io
    from ase import Atoms

    from lrnn import checkpoint, md
    from lrnn.md_cli import main
    from tests.conftest import nacl_cluster

    ckpt = checkpoint.save(tmp_path / "lc", meta=lc_pot.meta, params=lc_pot.state)  # a latent-Coulomb model
    pos, num = nacl_cluster([11, 17, 11, 17, 11])  # sum(Z) = 67: charged or a radical
    path = tmp_path / "s.extxyz"
    ase.io.write(path, Atoms(numbers=num, positions=pos))
    rc = main([str(ckpt), str(path), "--output", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "odd number of electrons" in err and "--total-charge" in err
    seen = {}

    def fake_run_md(model, atoms, **kw):  # the option reaches run_md
        seen.update(kw)
        raise ValueError("stop here")

    monkeypatch.setattr(md, "run_md", fake_run_md)
    assert main([str(ckpt), str(path), "--total-charge", "1", "--output", str(tmp_path / "o")]) == 2
    assert seen["total_charge"] == 1.0
    main([str(ckpt), str(path), "--output", str(tmp_path / "o")])
    assert seen["total_charge"] is None  # default: the structure's charge, else the rule


def test_md_help_mentions_options(capsys):
    from lrnn.md_cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for opt in ("--ensemble", "--temperature", "--dt", "--steps", "--seed", "--log", "--total-charge"):
        assert opt in out


@pytest.mark.slow
def test_sigint_stops_cleanly(trained_checkpoint, structure, tmp_path):
    """A real Ctrl-C (SIGINT) to `python -m lrnn.md_cli`: exit 130, files complete and readable."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import ase.io

    log = tmp_path / "o" / "log.csv"
    proc = subprocess.Popen([sys.executable, "-m", "lrnn.md_cli", str(trained_checkpoint), str(structure),
                             "--steps", "1000000", "--dt", "0.25", "--temperature", "100", "--log-every", "5",
                             "--traj-every", "50", "--output", str(tmp_path / "o"), "--no-progress"],
                            cwd=Path(__file__).resolve().parents[2], env=dict(os.environ, JAX_ENABLE_X64="1"))
    t0 = time.time()
    while time.time() - t0 < 300 and (not log.exists() or len(log.read_text().splitlines()) < 50):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    data = np.genfromtxt(log, delimiter=",", names=True)
    assert len(data) >= 49 and np.all(np.isfinite(data["etot_eV"]))
    assert len(ase.io.read(tmp_path / "o" / "trajectory.extxyz", index=":")) >= 5
    assert (tmp_path / "o" / "energy.png").exists()
