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
    """Solve the (linear) output layer exactly by weighted least squares; returns params."""
    D = _design(params, config, {k: jnp.asarray(v) for k, v in data.items()})
    u = jnp.asarray(data["u_cm"])
    w = jnp.ones_like(u) if weights is None else jnp.asarray(weights)
    A = D * w[:, None]
    AtA = A.T @ A
    AtA = AtA + (ridge * jnp.trace(AtA) / AtA.shape[0] + l2) * jnp.eye(AtA.shape[0])
    sol = jnp.linalg.solve(AtA, A.T @ (u * w))
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


def levenberg_marquardt(params, config, train, val=None, *, max_iter=500, relative=False,
                        rel_floor=None, lam0=1e-3, lam_up=4.0, lam_down=3.0, patience=50,
                        chunk=8192, time_limit=None, tol=1e-14, log_every=10, verbose=True,
                        refit_every=0, l2=0.0):
    """Hand-written LM on the residuals sqrt(w)(u_fit - u_ref), Marquardt's diagonal damping.

    J^T J and J^T r are accumulated over row chunks of ``chunk`` points (J by vmap(grad)),
    the step solves (J^T J + lam diag(J^T J) + lam 1e-12 I) d = -J^T r by Cholesky.
    ``l2`` adds l2 * |params|^2 to the sum of squares (weight decay, for small data sets).
    With ``refit_every=k > 0`` the linear output layer is also solved exactly by least
    squares at the start and after every k-th accepted step (kept if it lowers the loss).
    Returns (best params by validation loss, history dict).
    """
    u_tr = np.asarray(train["u_cm"])
    if rel_floor is None:
        rel_floor = 1e-3 * float(np.sqrt(np.mean(u_tr**2)))
    w_tr = np.sqrt(_weights(u_tr, relative, rel_floor))
    refit = jax.jit(lambda p: refit_output_layer(p, config, train, w_tr, l2=l2))
    if refit_every:
        params = refit(params)
    flat0, unravel = ravel_pytree(params)
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
        return J.T @ J, J.T @ r, jnp.sum(r**2)

    @jax.jit
    def sse(flat, d, w):
        return jnp.sum(resid(flat, d, w) ** 2)

    @jax.jit
    def solve(A, g, lam):
        dg = jnp.diag(A)
        M = A + lam * jnp.diag(dg) + (lam * 1e-12 * jnp.max(dg) + 1e-300) * jnp.eye(A.shape[0])
        L = jnp.linalg.cholesky(M)
        return -jax.scipy.linalg.cho_solve((L, True), g)

    def total_sse(flat):
        return float(sum(sse(flat, d, w) for d, w in tr_chunks)) + l2 * float(flat @ flat)

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
    hist = dict(it=[], train=[], val=[], lam=[], time=[])
    best = (val_loss(flat), flat)
    since_best = 0
    t0 = time.time()
    cur = None
    for it in range(max_iter):
        A = jnp.zeros((flat.size, flat.size))
        g = jnp.zeros(flat.size)
        cur = 0.0
        for d, w in tr_chunks:
            a_, g_, s_ = normal_eq(flat, d, w)
            A, g, cur = A + a_, g + g_, cur + float(s_)
        if l2:
            A = A + l2 * jnp.eye(flat.size)
            g = g + l2 * flat
            cur += l2 * float(flat @ flat)
        accepted = False
        for _ in range(30):
            step = solve(A, g, lam)
            if bool(jnp.all(jnp.isfinite(step))):
                new = total_sse(flat + step)
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
        flat = flat + step
        if refit_every and it % refit_every == 0:
            cand = ravel_pytree(refit(unravel(flat)))[0]
            s_c = total_sse(cand)
            if s_c < new:
                flat, new = cand, s_c
        lam = max(lam / lam_down, 1e-12)
        vl = val_loss(flat)
        hist["it"].append(it)
        hist["train"].append(new / n)
        hist["val"].append(vl)
        hist["lam"].append(lam)
        hist["time"].append(time.time() - t0)
        if vl < best[0]:
            best = (vl, flat)
            since_best = 0
        else:
            since_best += 1
        if verbose and (it % log_every == 0):
            print(f"LM it {it:4d} train {new / n:.3e} val {vl:.3e} lam {lam:.1e} "
                  f"t {time.time() - t0:.0f}s", flush=True)
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
