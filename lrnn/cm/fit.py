"""Fitting the C_m network: Levenberg–Marquardt (dense Jacobian, float64) and Adam.

The loss is P = mean(w_i (u_ref,i - u_fit,i)^2) with w_i = 1 (absolute) or
w_i = 1/(|u_ref,i| + floor)^2 (``relative=True``), with early stopping on a validation set.
Call with float64 enabled (``jax.config.update("jax_enable_x64", True)`` in your script).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lrnn.cm.model import (
    _act,
    _variants,
    energy,
    output_multipliers,
    product_features,
    raw_features,
)


def hidden_features(params, config, data):
    """Last hidden layer (N, H), averaged over the symmetrisation variants."""
    mean, std = jnp.asarray(config["x_mean"]), jnp.asarray(config["x_std"])
    if config.get("product"):
        f = product_features(params, config, (raw_features(config, data) - mean) / std)
        return f[:, :-1]  # the last product is the constant 1 (the bias takes it)
    act = _act(config["activation"])
    hs = []
    for v in _variants(config):
        h = (raw_features(config, data, **v) - mean) / std
        for W, b in zip(params["W"][:-1], params["b"][:-1]):
            h = act(h @ W + b)
        hs.append(h)
    return sum(hs) / len(hs)


def _design(params, config, data):
    """u = design @ vec([W_last; b_last]) (N, (H+1) * n_out): the output layer is linear."""
    h = hidden_features(params, config, data)
    h1 = jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], 1)
    if config["form"] == "pure":
        return h1 * config["u_scale"]
    fac = output_multipliers(config, data)  # (N, n_out)
    return (h1[:, :, None] * fac[:, None, :]).reshape(h.shape[0], -1)


def refit_output_layer(params, config, data, weights=None, ridge=1e-14, l2=0.0):
    r"""Solve the (linear) output layer exactly by weighted least squares; returns params.

    Minimises :math:`\|w\odot(Dx - u)\|^2 + \lambda\|x\|^2` with
    :math:`\lambda = \mathrm{ridge}\,\mathrm{tr}(A^\top A)/n + l_2`, solved as the augmented
    least-squares problem :math:`[A; \sqrt\lambda I]\,x = [w\odot u; 0]` by an SVD
    (not the normal equations, whose squared condition number made the answer depend on
    the number of CPU threads)."""
    D = _design(params, config, {k: jnp.asarray(v) for k, v in data.items()})
    u = jnp.asarray(data["u_cm"])
    w = jnp.ones_like(u) if weights is None else jnp.asarray(weights)
    A = D * w[:, None]
    n = A.shape[1]
    lam = ridge * jnp.sum(A * A) / n + l2
    A_aug = jnp.concatenate([A, jnp.sqrt(lam) * jnp.eye(n, dtype=A.dtype)], axis=0)
    sol = jnp.linalg.lstsq(A_aug, jnp.concatenate([u * w, jnp.zeros(n, A.dtype)]))[0]
    n_out = params["W"][-1].shape[1]
    M = sol.reshape(-1, n_out)
    W_last = M[:-1]
    if config.get("product"):  # the constant product's weight is carried by the bias
        W_last = jnp.concatenate([W_last, jnp.zeros((1, n_out), W_last.dtype)], 0)
    new = {"W": list(params["W"][:-1]) + [W_last], "b": list(params["b"][:-1]) + [M[-1]]}
    return new


def _weights(u, relative, floor):
    u = np.asarray(u, float)
    if not relative:
        return np.ones_like(u)
    return 1.0 / (np.abs(u) + floor)


def _as_jnp(d):
    return {k: jnp.asarray(v) for k, v in d.items()}


def _output_layer_mask(params):
    """Flat boolean mask of the linear output layer (W[-1], b[-1]), in ravel_pytree order."""
    def ones_last(leaves):
        return [np.zeros(np.shape(x)) for x in leaves[:-1]] + [np.ones(np.shape(leaves[-1]))]
    mask = {"W": ones_last(params["W"]), "b": ones_last(params["b"])}
    return np.asarray(ravel_pytree(mask)[0]) > 0.5


@jax.jit
def damped_step(A, g, lam):
    """The LM step d solving (A + lam diag⁺(A) + lam 1e-12 max diag(A) I) d = −g by Cholesky.

    diag⁺ clips the diagonal at zero, so that round-off negatives on the diagonal of a
    projected Gauss–Newton matrix never lower the damping.  Returns
    (d, cond_est) with cond_est = (max L_ii / min L_ii)², a cheap estimate of the
    condition number of the damped matrix; a failed factorisation gives non-finite d.
    """
    dg = jnp.diag(A)
    top = jnp.max(jnp.abs(dg))
    dg = jnp.maximum(dg, 0.0)
    M = A + lam * jnp.diag(dg) + (lam * 1e-12 * top + 1e-300) * jnp.eye(A.shape[0])
    L = jnp.linalg.cholesky(M)
    d = -jax.scipy.linalg.cho_solve((L, True), g)
    Ld = jnp.abs(jnp.diag(L))
    return d, (jnp.max(Ld) / jnp.min(Ld)) ** 2


def levenberg_marquardt(params, config, train, val=None, *, max_iter=500, relative=False,
                        rel_floor=None, lam0=1e-3, lam_up=4.0, lam_down=3.0, patience=50,
                        chunk=8192, time_limit=None, tol=1e-14, log_every=10, verbose=True,
                        refit_every=0, l2=0.0, projection=True, max_tries=40):
    """Levenberg–Marquardt on the residuals r = sqrt(w)(u_fit − u_ref), Marquardt damping.

    Minimises S = Σ_i r_i² + l2 |params|² (``l2``: weight decay, for small data sets).
    The output layer is linear: u_fit = D(θ) c, with θ the hidden-layer parameters and
    c = vec([W_last; b_last]).

    ``projection=True`` (default) is variable projection (Golub & Pereyra, SIAM J. Numer.
    Anal. 10, 413 (1973), with Kaufman's Jacobian, BIT 15, 49 (1975)): c is eliminated,
    c(θ) = argmin_c |sqrt(w)(D(θ) c − u)|² + l2 |c|², and LM runs on θ alone with the
    projected Gauss–Newton matrix
        A = J₀ᵀJ₀ − Bᵀ (G + l2 I)⁻¹ B,   B = DᵀJ₀,  G = DᵀD,   g = J₀ᵀ r + l2 θ,
    J₀ = ∂r/∂θ at fixed c (per-sample gradients).  All four products are sums over row
    chunks.  This removes the flat directions along which the coupled fit of c and θ
    stalls in local minima (on the 250-point test problem 10 of 10 initialisations
    converge, against 6 of 10 with ``projection=False``).

    ``projection=False`` is plain LM on all parameters; with ``refit_every=k > 0`` the
    output layer is then also solved exactly at the start and after every k-th accepted
    step (kept if it lowers the loss).  This is how the committed C_m models were fitted.

    Each iteration solves (A + λ diag(A)) d = −g (``damped_step``).  A step is accepted
    only if it is finite and lowers S; otherwise λ ← λ·lam_up and the step is retried (at
    most ``max_tries`` times).  A failed Cholesky factorisation (non-finite step) raises λ
    like any rejected step and never counts as a step; ``hist["nonfinite"]`` records it
    as (iteration, λ, condition number of the damped matrix from its eigenvalues).
    ``hist["cond"]`` holds the Cholesky estimate of the accepted step's condition number.
    Early stopping keeps the parameters with the lowest validation loss.
    Returns (best params by validation loss, history dict).
    """
    u_tr = np.asarray(train["u_cm"])
    if rel_floor is None:
        rel_floor = 1e-3 * float(np.sqrt(np.mean(u_tr**2)))
    w_tr = np.sqrt(_weights(u_tr, relative, rel_floor))
    refit = jax.jit(lambda p: refit_output_layer(p, config, train, w_tr, l2=l2))
    if refit_every or projection:
        params = refit(params)
    flat0, unravel = ravel_pytree(params)
    out_mask = _output_layer_mask(params)
    th_idx = jnp.asarray(np.flatnonzero(~out_mask))
    n = u_tr.size
    chunks = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    tr_chunks = [(_as_jnp({k: np.asarray(v)[s] for k, v in train.items()}),
                  jnp.asarray(w_tr[s])) for s in chunks]

    def resid(flat, d, w):
        return (energy(unravel(flat), config, d) - d["u_cm"]) * w

    def resid1(flat, d1, w1):
        dd = {k: v[None] for k, v in d1.items()}
        return resid(flat, dd, w1)[0]

    @jax.jit
    def normal_eq(flat, d, w):
        # per-sample gradients (vmap of grad): O(N P), much cheaper than jacfwd's O(N P H)
        J = jax.vmap(jax.grad(resid1), in_axes=(None, 0, 0))(flat, d, w)
        r = resid(flat, d, w)
        if not projection:
            return J.T @ J, J.T @ r, jnp.sum(r**2)
        J0 = J[:, th_idx]
        Dm = _design(unravel(flat), config, d) * w[:, None]
        return J0.T @ J0, J0.T @ r, jnp.sum(r**2), Dm.T @ J0, Dm.T @ Dm

    @jax.jit
    def projected(JtJ, Jtr, DtJ, DtD, flat):
        G = DtD + (1e-14 * jnp.trace(DtD) / DtD.shape[0] + l2) * jnp.eye(DtD.shape[0])
        A = JtJ - DtJ.T @ jnp.linalg.solve(G, DtJ)
        th = flat[th_idx]
        return 0.5 * (A + A.T) + l2 * jnp.eye(th.size), Jtr + l2 * th

    @jax.jit
    def sse(flat, d, w):
        return jnp.sum(resid(flat, d, w) ** 2)

    def total_sse(flat):
        return float(sum(sse(flat, d, w) for d, w in tr_chunks)) + l2 * float(flat @ flat)

    def candidate(flat, step):
        if not projection:
            return flat + step
        return ravel_pytree(refit(unravel(flat.at[th_idx].add(step))))[0]

    if val is not None:
        u_va = np.asarray(val["u_cm"])
        w_va = np.sqrt(_weights(u_va, relative, rel_floor))
        va = (_as_jnp(val), jnp.asarray(w_va))

        def val_loss(flat):
            return float(sse(flat, *va)) / u_va.size
    else:
        def val_loss(flat):
            return total_sse(flat) / n

    flat = flat0
    lam = lam0
    hist = dict(it=[], train=[], val=[], lam=[], time=[], cond=[], nonfinite=[])
    best = (val_loss(flat), flat)
    since_best = 0
    t0 = time.time()
    for it in range(max_iter):
        sums = None
        for d, w in tr_chunks:
            part = normal_eq(flat, d, w)
            sums = part if sums is None else tuple(a + b for a, b in zip(sums, part))
        cur = float(sums[2]) + l2 * float(flat @ flat)
        if projection:
            A, g = projected(sums[0], sums[1], sums[3], sums[4], flat)
        else:
            A, g = sums[0] + l2 * jnp.eye(flat.size), sums[1] + l2 * flat
        accepted = False
        for _ in range(max_tries):
            step, cond = damped_step(A, g, lam)
            if not bool(jnp.all(jnp.isfinite(step))):
                ev = np.linalg.eigvalsh(np.asarray(A) + lam * np.diag(np.abs(np.diag(A))))
                hist["nonfinite"].append((it, lam, float(abs(ev).max() / max(abs(ev).min(), 1e-300))))
                if verbose:
                    print(f"LM it {it}: Cholesky failed at lam={lam:.1e} "
                          f"(cond {hist['nonfinite'][-1][2]:.1e}); raising lam", flush=True)
            else:
                cand = candidate(flat, step)
                new = total_sse(cand)
                if new < cur:
                    accepted = True
                    break
            lam *= lam_up
            if lam > 1e12:
                break
        if not accepted:
            if verbose:
                print(f"LM: no decreasing step at iteration {it} (lam={lam:.1e}); stopping")
            break
        rel_impr = (cur - new) / max(cur, 1e-300)
        flat = cand
        if refit_every and not projection and it % refit_every == 0:
            c_flat = ravel_pytree(refit(unravel(flat)))[0]
            s_c = total_sse(c_flat)
            if s_c < new:
                flat, new = c_flat, s_c
        lam = max(lam / lam_down, 1e-12)
        vl = val_loss(flat)
        for k, v in (("it", it), ("train", new / n), ("val", vl), ("lam", lam),
                     ("time", time.time() - t0), ("cond", float(cond))):
            hist[k].append(v)
        if vl < best[0]:
            best = (vl, flat)
            since_best = 0
        else:
            since_best += 1
        if verbose and (it % log_every == 0):
            print(f"LM it {it:4d} train {new / n:.3e} val {vl:.3e} lam {lam:.1e} "
                  f"cond {float(cond):.1e} t {time.time() - t0:.0f}s", flush=True)
        if since_best >= patience:
            if verbose:
                print(f"LM: early stop at {it} (no validation improvement in {patience})")
            break
        if rel_impr < tol:
            break
        if time_limit is not None and time.time() - t0 > time_limit:
            if verbose:
                print(f"LM: time limit at iteration {it}")
            break
    return unravel(best[1]), hist


def adam(params, config, train, val=None, *, steps=20000, lr=3e-3, lr_end=1e-5, batch=1024,
         relative=False, rel_floor=None, patience=4000, eval_every=200, seed=0,
         time_limit=None, verbose=True):
    """Minibatch Adam with cosine decay; returns (best params by validation loss, history)."""
    u_tr = np.asarray(train["u_cm"])
    if rel_floor is None:
        rel_floor = 1e-3 * float(np.sqrt(np.mean(u_tr**2)))
    w_tr = _weights(u_tr, relative, rel_floor)
    tr = _as_jnp(train)
    w_tr = jnp.asarray(w_tr)
    n = u_tr.size
    sched = optax.cosine_decay_schedule(lr, steps, alpha=lr_end / lr)
    tx = optax.adam(sched)
    opt = tx.init(params)

    def loss(p, d, w):
        return jnp.mean(w * (energy(p, config, d) - d["u_cm"]) ** 2)

    @jax.jit
    def step(p, o, idx):
        d = {k: v[idx] for k, v in tr.items()}
        l_, g = jax.value_and_grad(loss)(p, d, w_tr[idx])
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, l_

    if val is not None:
        va = _as_jnp(val)
        w_va = jnp.asarray(_weights(val["u_cm"], relative, rel_floor))
    else:
        va, w_va = tr, w_tr
    vloss = jax.jit(lambda p: loss(p, va, w_va))
    key = jax.random.PRNGKey(seed)
    best = (float(vloss(params)), params)
    hist = dict(step=[], val=[], time=[])
    t0 = time.time()
    since = 0
    for s in range(steps):
        key, k = jax.random.split(key)
        idx = jax.random.randint(k, (min(batch, n),), 0, n)
        params, opt, _ = step(params, opt, idx)
        if s % eval_every == 0 or s == steps - 1:
            vl = float(vloss(params))
            hist["step"].append(s)
            hist["val"].append(vl)
            hist["time"].append(time.time() - t0)
            if vl < best[0]:
                best, since = (vl, params), 0
            else:
                since += eval_every
            if verbose and s % (eval_every * 10) == 0:
                print(f"Adam step {s} val {vl:.3e} t {time.time() - t0:.0f}s", flush=True)
            if since >= patience or (time_limit and time.time() - t0 > time_limit):
                break
    return best[1], hist
