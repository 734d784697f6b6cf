"""The C_m network: u_LR = -Σ_m C_m(internal coordinates) / R^m.

Parameters are a plain pytree ``{"W": [...], "b": [...]}``; the network is a pure function
``apply(params, config, data)``.  ``config`` is a JSON-serialisable dict:

    system        "atom_diatom" (R, r, theta) or "diatom_diatom" (R, r1, r2, theta1, theta2, phi)
    form          "cm" (physical form) or "pure" (a plain network u(R, ...) without it)
    powers        e.g. [6, 8, 10] or [3, 4, 5, 6]
    hidden        hidden-layer widths, e.g. [30] (the paper's 2-30-3)
    activation    "sigmoid" (logistic, as in the paper) or "tanh"
    features      "raw" (the paper's inputs: r's and angles in radians), "invariant"
                  (r's, cos theta_i and x = s1 s2 cos phi: smooth, periodic by construction)
                  or "angular" (diatom–diatom only: the network sees (r1, r2) and outputs the
                  radial coefficients of each C_m in a basis of rotation-invariant angular
                  monomials c1^a c2^b (e1·e2)^k whose ranks and parities are those allowed
                  by the multipole expansion; see ``angular_basis``)
    product       (features "angular" only) if true, one network maps each bond length r_i
                  to K features g(r_i) (the last hidden layer, shared by both molecules) and
                  the radial coefficients are linear in the products [g(r1), 1] ⊗ [g(r2), 1]
                  (molecular properties multiply, e.g. C3 ∝ μ(r1) μ(r2))
    symmetrize    "none", "homonuclear" (C_m(theta) = C_m(π - theta), by averaging the
                  network over the two symmetric inputs; with features "angular" by keeping
                  only even powers of cos theta) or "swap" (diatom–diatom: identical
                  molecules, (r1, theta1) <-> (r2, π - theta2))
    x_mean/x_std  input normalisation (from the training data)
    cm_scale      per-power output scale (au): C_m = cm_scale[m] * network output
    u_scale       (form "pure") output scale in cm^-1
    exchange      (atom–diatom, homonuclear, optional) the exchange–overlap term added to
                  the series, ``{"beta": β (1/bohr), "powers": [p...], "d0": d0 (bohr),
                  "scale_cm": s (cm^-1)}``; see ``exchange_multipliers``

Energies are in cm^-1, lengths in bohr, C_m in atomic units.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from lrnn.units import HARTREE_TO_CM1

ATOM_DIATOM = "atom_diatom"
DIATOM_DIATOM = "diatom_diatom"
COLUMNS = {
    ATOM_DIATOM: ("R", "r", "theta_deg"),
    DIATOM_DIATOM: ("R", "r1", "r2", "theta1_deg", "theta2_deg", "phi_deg"),
}
FORMAT_VERSION = 1


def system_of(data) -> str:
    """Infer the system type from the columns present."""
    if all(k in data for k in COLUMNS[DIATOM_DIATOM]):
        return DIATOM_DIATOM
    if all(k in data for k in COLUMNS[ATOM_DIATOM]):
        return ATOM_DIATOM
    raise ValueError("cannot tell the system type from the columns "
                     f"{sorted(data)}; need {COLUMNS[ATOM_DIATOM]} (atom–diatom) or "
                     f"{COLUMNS[DIATOM_DIATOM]} (diatom–diatom)")


# --- features -----------------------------------------------------------------------------

def raw_features(config, data, swap=False, mirror=False):
    """Unnormalised network inputs (N, d) from a dict of columns (angles in degrees)."""
    sysname, feats = config["system"], config["features"]
    deg = jnp.pi / 180
    if sysname == ATOM_DIATOM:
        r = jnp.asarray(data["r"])
        th = jnp.asarray(data["theta_deg"]) * deg
        if mirror:
            th = jnp.pi - th
        cols = [r] if feats == "angular" else [r, th if feats == "raw" else jnp.cos(th)]
    else:
        r1, r2 = jnp.asarray(data["r1"]), jnp.asarray(data["r2"])
        t1, t2 = jnp.asarray(data["theta1_deg"]) * deg, jnp.asarray(data["theta2_deg"]) * deg
        ph = jnp.asarray(data["phi_deg"]) * deg
        if swap:
            r1, r2, t1, t2 = r2, r1, jnp.pi - t2, jnp.pi - t1
        if feats == "angular":
            cols = [r1, r2]
        elif feats == "raw":
            # phi enters through cos(phi): fold into [0, π] (the paper's range)
            cols = [r1, r2, t1, t2, jnp.arccos(jnp.clip(jnp.cos(ph), -1.0, 1.0))]
        else:
            cols = [r1, r2, jnp.cos(t1), jnp.cos(t2), jnp.sin(t1) * jnp.sin(t2) * jnp.cos(ph)]
    if config["form"] == "pure":
        cols = [jnp.asarray(data["R"])] + cols
    return jnp.stack(cols, -1)


def _variants(config):
    sym = config.get("symmetrize", "none")
    if config["features"] == "angular":
        return [dict()]  # symmetry is exact in the angular basis
    if sym == "homonuclear":
        return [dict(), dict(mirror=True)]
    if sym == "swap":
        return [dict(), dict(swap=True)]
    return [dict()]


# --- angular basis (features "angular") ---------------------------------------------------

def angular_basis(m):
    """Invariant monomials [a, b, k] = c1^a c2^b (e1·e2)^k allowed in C_m (diatom–diatom).

    A molecular tensor of rank l on molecule i enters as a polynomial of degree <= l and
    parity (-1)^l in e_i.  Electrostatics: ranks (l1, l2) with l1 + l2 = m - 1, both >= 1
    (neutral molecules).  m = 6 also gets the second-order (induction, dispersion) ranks
    (l1, l2) in {0, 2}^2.  Degree of e1 in a monomial: a + k; of e2: b + k.
    """
    ranks = [(l1, m - 1 - l1) for l1 in range(1, m - 1)]
    if m == 6:
        ranks = [(0, 0), (0, 2), (2, 0), (2, 2)]  # second order (no l1 + l2 = 5 moments)
    out = set()
    for l1, l2 in ranks:
        for k in range(0, min(l1, l2) + 1):
            for a in range(0, l1 - k + 1):
                for b in range(0, l2 - k + 1):
                    if (a + k) % 2 == l1 % 2 and (b + k) % 2 == l2 % 2:
                        out.add((a, b, k))
    return [list(t) for t in sorted(out)]


def angular_basis_atom_diatom(m, homonuclear):
    """Powers k of cos(theta) in C_m (atom–diatom, neutral atom): the diatom's tensors of
    rank l <= m - 4 (C_m = Σ_L C_m^L P_L(cos θ), L <= m - 4); only even k if homonuclear."""
    return [[k] for k in range(0, m - 3) if not (homonuclear and k % 2)]


def _angular_values(config, data):
    """(N, K) basis values and the power index of each column."""
    deg = jnp.pi / 180
    if config["system"] == ATOM_DIATOM:
        c = jnp.cos(jnp.asarray(data["theta_deg"]) * deg)
        cols, which = [], []
        for i, m in enumerate(config["powers"]):
            for (k,) in config["angular_basis"][str(m)]:
                cols.append(c**k)
                which.append(i)
        return jnp.stack(cols, -1), which
    t1, t2 = jnp.asarray(data["theta1_deg"]) * deg, jnp.asarray(data["theta2_deg"]) * deg
    ph = jnp.asarray(data["phi_deg"]) * deg
    c1, c2 = jnp.cos(t1), jnp.cos(t2)
    z = c1 * c2 + jnp.sin(t1) * jnp.sin(t2) * jnp.cos(ph)
    cols, which = [], []
    for i, m in enumerate(config["powers"]):
        for a, b, k in config["angular_basis"][str(m)]:
            cols.append(c1**a * c2**b * z**k)
            which.append(i)
    return jnp.stack(cols, -1), which


def output_multipliers(config, data):
    """(N, n_out) factors f such that u_cm = Σ_j f_j * network_output_j (form "cm")."""
    R = jnp.asarray(data["R"])
    per_power = jnp.stack([-HARTREE_TO_CM1 * s / R**m for s, m in
                           zip(config["cm_scale"], config["powers"])], -1)
    if config["features"] == "angular":
        B, which = _angular_values(config, data)
        per_power = B * per_power[:, jnp.asarray(which)]
    if "exchange" in config:
        per_power = jnp.concatenate([per_power, exchange_multipliers(config, data)], -1)
    return per_power


def exchange_multipliers(config, data):
    """(N, P) factors of the exchange–overlap term (atom–diatom, homonuclear diatom).

    The inverse-power series is the long-range (multipole) part of u only; where the
    atom's and the diatom's densities overlap there is also an exchange term, which
    decays exponentially with the atom–atom distances

        d_± = |R ∓ (r/2) e| = sqrt(R² + r²/4 ∓ R r cos θ)   (bohr),

    as exp(−β d) with β = 2 sqrt(2 I) for an atom of ionisation energy I (hartree): the
    square of the density tail exp(−sqrt(2 I) d) (β = 2 / bohr for H, 1.26 for Li).  The
    model adds

        u_x = s Σ_p A_p(r, θ) Σ_± (d_±/d0)^p exp(−β (d_± − d0))     (cm⁻¹),

    with the amplitudes A_p extra outputs of the C_m network; the sum over both atoms
    keeps u(θ) = u(π − θ).  u_x falls off faster than any power of R, so the asymptote
    −Σ C_m/R^m is untouched; inside the fitted range u_x absorbs what the series could
    only mimic with many high powers (which then corrupt C6; see the H3 results).
    """
    ex = config["exchange"]
    beta, d0 = ex["beta"], ex["d0"]
    ds = atom_atom_distances(data)
    cols = [ex["scale_cm"] * sum((d / d0) ** p * jnp.exp(-beta * (d - d0)) for d in ds)
            for p in ex["powers"]]
    return jnp.stack(cols, -1)


def atom_atom_distances(data):
    """(d_+, d_-) (bohr): the atom's distances to the diatom's two atoms (atom–diatom)."""
    R, r = jnp.asarray(data["R"]), jnp.asarray(data["r"])
    rc = R * r * jnp.cos(jnp.asarray(data["theta_deg"]) * (jnp.pi / 180))
    return tuple(jnp.sqrt(R**2 + 0.25 * r**2 - sign * rc) for sign in (1.0, -1.0))


def _n_cm_outputs(config):
    if config["features"] == "angular":
        return sum(len(config["angular_basis"][str(m)]) for m in config["powers"])
    return len(config["powers"])


def n_outputs(config):
    if config["form"] == "pure":
        return 1
    return _n_cm_outputs(config) + len(config.get("exchange", {}).get("powers", ()))


# --- network ----------------------------------------------------------------------------------

def _act(name):
    return {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}[name]


def init_params(config, key):
    n_in = len(config["x_mean"])
    n_out = n_outputs(config)
    if config.get("product"):
        return _init_product(config, key, n_out)
    sizes = [n_in] + list(config["hidden"]) + [n_out]
    W, b = [], []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, k = jax.random.split(key)
        scale = (1.0 if i < len(sizes) - 2 else 0.1) / np.sqrt(m)
        if config["activation"] == "sigmoid" and 0 < i:
            scale *= 4.0
        W.append(scale * jax.random.normal(k, (m, n), dtype=jnp.float64))
        b.append(jnp.zeros((n,), dtype=jnp.float64))
    return {"W": W, "b": b}


def _init_product(config, key, n_out):
    sizes = [1] + list(config["hidden"])
    W, b = [], []
    for m, n in zip(sizes[:-1], sizes[1:]):
        key, k = jax.random.split(key)
        W.append(jax.random.normal(k, (m, n), dtype=jnp.float64) / np.sqrt(m))
        b.append(0.5 * jax.random.normal(jax.random.fold_in(k, 1), (n,), dtype=jnp.float64))
    K = sizes[-1] + 1
    key, k = jax.random.split(key)
    W.append(0.1 * jax.random.normal(k, (K * K, n_out), dtype=jnp.float64) / K)
    b.append(jnp.zeros((n_out,), dtype=jnp.float64))
    return {"W": W, "b": b}


def product_features(params, config, x):
    """[g(r1), 1] ⊗ [g(r2), 1] for normalised inputs x = (r1, r2), shape (N, (K+1)^2)."""
    act = _act(config["activation"])

    def g(r):
        h = r[:, None]
        for W, b in zip(params["W"][:-1], params["b"][:-1]):
            h = act(h @ W + b)
        return jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], 1)

    g1, g2 = g(x[:, 0]), g(x[:, 1])
    return (g1[:, :, None] * g2[:, None, :]).reshape(x.shape[0], -1)


def mlp(params, x, activation):
    act = _act(activation)
    h = x
    for W, b in zip(params["W"][:-1], params["b"][:-1]):
        h = act(h @ W + b)
    return h @ params["W"][-1] + params["b"][-1]


def _net(params, config, data):
    mean = jnp.asarray(config["x_mean"])
    std = jnp.asarray(config["x_std"])
    if config.get("product"):
        x = (raw_features(config, data) - mean) / std
        return product_features(params, config, x) @ params["W"][-1] + params["b"][-1]
    outs = [mlp(params, (raw_features(config, data, **v) - mean) / std, config["activation"])
            for v in _variants(config)]
    return sum(outs) / len(outs)


def cm_values(params, config, data):
    """C_m (au), shape (N, len(powers)); only for form "cm"."""
    if config["form"] != "cm":
        raise ValueError("cm_values needs a model with the physical form (form='cm')")
    out = _net(params, config, data)[:, :_n_cm_outputs(config)]
    if config["features"] != "angular":
        return out * jnp.asarray(config["cm_scale"])
    B, which = _angular_values(config, data)
    which = np.asarray(which)
    cs = [config["cm_scale"][i] * jnp.sum((out * B)[:, which == i], -1)
          for i in range(len(config["powers"]))]
    return jnp.stack(cs, -1)


def exchange_energy(params, config, data):
    """The exchange–overlap part u_x (cm^-1, shape (N,)) of a model with ``exchange``."""
    if "exchange" not in config:
        raise ValueError("this model has no exchange term (config 'exchange')")
    out = _net(params, config, data)[:, _n_cm_outputs(config):]
    return jnp.sum(out * exchange_multipliers(config, data), axis=-1)


def energy(params, config, data):
    """u_LR in cm^-1, shape (N,): −Σ_m C_m/R^m (plus the exchange term, if configured)."""
    if config["form"] == "pure":
        return _net(params, config, data)[:, 0] * config["u_scale"]
    return jnp.sum(_net(params, config, data) * output_multipliers(config, data), axis=-1)


def make_config(system, data, *, form="cm", powers=None, hidden=(30,), activation="sigmoid",
                features="raw", symmetrize="none", cm_scale=None, name="", product=False,
                exchange=None):
    """A config with input normalisation (and scales) computed from ``data``.

    ``exchange``: None, or ``dict(beta=β (1/bohr), powers=[0, 1])`` (optionally ``d0``
    in bohr, default the smallest atom–atom distance in ``data``, and ``scale_cm``,
    default rms(u)) to add the exchange–overlap term of ``exchange_multipliers``.
    """
    if system not in COLUMNS:
        raise ValueError(f"unknown system {system!r}; use {sorted(COLUMNS)}")
    if powers is None:
        powers = [6, 8, 10] if system == ATOM_DIATOM else [3, 4, 5, 6]
    if features == "angular" and form != "cm":
        raise ValueError("features='angular' is for C_m models (form='cm')")
    cfg = dict(format_version=FORMAT_VERSION, name=name, system=system, form=form,
               powers=[int(p) for p in powers], hidden=[int(h) for h in hidden],
               activation=activation, features=features, symmetrize=symmetrize)
    if product:
        if features != "angular" or system != DIATOM_DIATOM:
            raise ValueError("product=True needs a diatom–diatom model with features='angular'")
        cfg["product"] = True
    if features == "angular" and system == DIATOM_DIATOM:
        cfg["angular_basis"] = {str(m): angular_basis(int(m)) for m in powers}
    elif features == "angular":
        cfg["angular_basis"] = {str(m): angular_basis_atom_diatom(int(m), symmetrize ==
                                                                  "homonuclear")
                                for m in powers}
    if exchange is not None:
        if system != ATOM_DIATOM or symmetrize != "homonuclear" or form != "cm":
            raise ValueError("the exchange term is for atom–homonuclear-diatom C_m models "
                             "(system='atom_diatom', symmetrize='homonuclear', form='cm')")
        if not exchange.get("beta", 0) > 0 or not exchange.get("powers"):
            raise ValueError(f"exchange needs beta > 0 (1/bohr) and a list of powers; got "
                             f"{exchange!r}")
        d_min = float(min(np.min(np.asarray(d)) for d in atom_atom_distances(data)))
        u_rms = float(np.sqrt(np.mean(np.asarray(data["u_cm"]) ** 2)))
        cfg["exchange"] = dict(beta=float(exchange["beta"]),
                               powers=[int(q) for q in exchange["powers"]],
                               d0=float(exchange.get("d0", d_min)),
                               scale_cm=float(exchange.get("scale_cm", u_rms)))
    cfg["x_mean"] = [0.0]
    cfg["x_std"] = [1.0]
    X = np.concatenate([np.asarray(raw_features(cfg, data, **v)) for v in _variants(cfg)])
    cfg["x_mean"] = X.mean(0).tolist()
    cfg["x_std"] = np.where(X.std(0) > 0, X.std(0), 1.0).tolist()
    u = np.asarray(data["u_cm"])
    cfg["u_scale"] = float(np.sqrt(np.mean(u**2)))
    if cm_scale is None:
        # each term contributing ~rms(u) at the median R
        R0 = float(np.median(data["R"]))
        cm_scale = [cfg["u_scale"] / HARTREE_TO_CM1 * R0**m for m in powers]
    cfg["cm_scale"] = [float(s) for s in cm_scale]
    return cfg


# --- persistence -------------------------------------------------------------------------------

class CmModel:
    """A config plus parameters, callable on a dict of columns (returns u in cm^-1)."""

    def __init__(self, config, params):
        self.config = config
        self.params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)

    def __call__(self, data):
        return energy(self.params, self.config, data)

    def cm(self, data):
        return cm_values(self.params, self.config, data)

    @property
    def system(self):
        return self.config["system"]

    def n_params(self):
        return int(sum(np.size(a) for a in jax.tree_util.tree_leaves(self.params)))

    def save(self, path, extra=None):
        save_model(path, self.config, self.params, extra)


def save_model(path, config, params, extra=None):
    """Write ``path/config.json`` and ``path/weights.npz`` atomically (temp dir + rename)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-model-", dir=parent)
    arrays = {}
    for i, (W, b) in enumerate(zip(params["W"], params["b"])):
        arrays[f"W{i}"] = np.asarray(W, np.float64)
        arrays[f"b{i}"] = np.asarray(b, np.float64)
    np.savez(os.path.join(tmp, "weights.npz"), **arrays)
    meta = dict(config=config, n_layers=len(params["W"]), extra=extra or {})
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(meta, f, indent=1)
    old = None
    if os.path.exists(path):
        old = path + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old:
        shutil.rmtree(old)


def load_model(path) -> CmModel:
    """Load a model written by ``save_model`` (a directory with config.json + weights.npz)."""
    cfg_path = os.path.join(path, "config.json")
    w_path = os.path.join(path, "weights.npz")
    if not (os.path.isfile(cfg_path) and os.path.isfile(w_path)):
        raise FileNotFoundError(f"{path!r} is not a C_m model directory "
                                "(expected config.json and weights.npz)")
    with open(cfg_path) as f:
        meta = json.load(f)
    with np.load(w_path) as z:
        n = meta["n_layers"]
        params = {"W": [z[f"W{i}"] for i in range(n)], "b": [z[f"b{i}"] for i in range(n)]}
    m = CmModel(meta["config"], params)
    m.extra = meta.get("extra", {})
    return m
