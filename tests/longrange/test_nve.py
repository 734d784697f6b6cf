"""A short NVE run (velocity Verlet, float64) with every long-range term on DeepPot-SE, and
with a latent-Coulomb term on the equivariant (MACE-like) and REANN local models: the total
energy is conserved (no drift), which also checks that forces are the exact gradient and smooth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn import bundle

TIME_UNIT_FS = 10.1805054836  # sqrt(amu Å² / eV) in fs
BASE = {"type": "deeppot_se", "type_map": [1, 8], "rcut": 3.5, "rcut_smth": 1.0, "embed": [4, 8],
        "axis_neurons": 2, "fit": [8]}
STATS = {"s_avg": jnp.zeros(2), "s_std": jnp.ones(2) * 0.3, "dir_std": jnp.ones(2) * 0.3,
         "n_norm": jnp.asarray(5.0)}
MACE = {"type": "mace", "type_map": [1, 8], "rcut": 3.5, "channels": 4, "l_max": 1, "hidden_l": 1,
        "correlation": 2, "n_layers": 2, "radial_mlp": [8], "readout": [8]}
REANN = {"type": "eann", "type_map": [1, 8], "rcut": 3.5, "n_radial": 4, "l_max": 2, "channels": 3, "fit": [8],
         "recursions": 1, "recursion_fit": [6]}
LATENT = {"long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [4]}]}


#: An untrained network has no short-range repulsion: within ~10 fs the untrained MACE-like
#: model with latent charges pulled O-H and H-H to 0.6 Å with 20 eV swings of the potential
#: energy (smooth, but too stiff for the 0.1 fs step).  Every run therefore adds a soft wall
#: WALL_EV * Σ_{i<j} (0.8 Å / r_ij)^12 (its own exact gradient) and scales the model's energy
#: by ``scale`` (a change of energy unit): the molecules stay molecular while pairs still
#: cross r_c, which the test checks.
WALL_EV = 0.5


@pytest.mark.parametrize("base,extra,scale", [
    (BASE, LATENT, 1.0),
    (BASE, {"long_range": [{"type": "sog", "n_gaussians": 3, "fit": [4]}]}, 1.0),
    (BASE, {"long_range": [{"type": "dispersion", "r_on": 3.0, "r_off": 4.5}]}, 1.0),
    (BASE, {"far_field": {"r_on": 2.0, "r_off": 3.5}}, 1.0),
    (MACE, LATENT, 0.3),
    (REANN, LATENT, 1.0),
], ids=["latent_coulomb", "sog", "dispersion", "far_field", "mace+latent_coulomb", "reann+latent_coulomb"])
def test_nve_energy_conservation(base, extra, scale):
    cfg = dict(base, **extra)
    model = bundle.model(cfg, "float64")
    params = bundle.Params(model.init(0).weights, STATS, np.zeros(2))
    # two water-like molecules 3-4 Å apart: atoms cross r_cs/r_c and the far-field switch
    pos0 = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [3.2, 0.5, 0.3], [4.1, 0.8, 0.3], [3.0, 1.4, 0.6]])
    num = np.array([8, 1, 1, 8, 1, 1])
    system, nbrs = bundle.prepare(model, pos0, num)  # all-pairs layout: valid for any geometry

    def forces(p):
        r = bundle.energy_forces_virial(model, params, bundle.System(p, system.species, system.cell,
                                                                     system.total_charge), nbrs)
        e_wall, g_wall = jax.value_and_grad(wall)(p)
        return scale * r.energy + e_wall, scale * r.forces - g_wall

    iu = np.triu_indices(len(num), 1)

    def distances(p):
        return jnp.linalg.norm(p[iu[0]] - p[iu[1]], axis=-1)

    def wall(p):
        return WALL_EV * jnp.sum((0.8 / distances(p)) ** 12)
    mass = jnp.asarray([16.0, 1.0, 1.0] * 2)[:, None]

    @jax.jit
    def run(pos, vel):
        dt = 0.1 / TIME_UNIT_FS

        def step(carry, _):
            p, v, f = carry
            v = v + 0.5 * dt * f / mass
            p = p + dt * v
            e, f = forces(p)
            v = v + 0.5 * dt * f / mass
            return (p, v, f), (e + 0.5 * jnp.sum(mass * v * v), distances(p))

        _, f0 = forces(pos)
        return jax.lax.scan(step, (pos, vel, f0), None, length=1500)[1]

    vel = jax.random.normal(jax.random.PRNGKey(0), (6, 3)) * jnp.sqrt(0.05 / mass)  # ~ 600 K
    etot, dist = map(np.asarray, run(jnp.asarray(pos0), vel))
    assert np.all(np.isfinite(etot))
    rc = cfg["rcut"]
    assert np.sum((dist.min(0) < rc) & (dist.max(0) > rc)) >= 3, "too few pairs crossed the cutoff"
    drift = abs(np.polyfit(np.arange(len(etot)) * 0.1e-3, etot, 1)[0])  # eV/ps over 0.15 ps
    fluct = etot.std()
    ekin_scale = 0.05 * 6 * 1.5
    assert fluct < 1e-3 * ekin_scale, f"energy fluctuation {fluct} eV"
    assert drift < 1e-2 * ekin_scale, f"energy drift {drift} eV/ps"
