"""Neighbour layouts against a brute-force minimum-image search; overflow reallocates."""

import numpy as np
import pytest

import lrnn  # noqa: F401
from lrnn.neighbors import (
    Capacity,
    NeighborOverflow,
    build_layout,
    required_capacity,
    species_to_types,
)


def brute_pairs(pos, cell, rcut):
    inv = np.linalg.inv(cell)
    out = set()
    n = len(pos)
    rng = range(-2, 3)
    for i in range(n):
        for j in range(n):
            for a in rng:
                for b in rng:
                    for c in rng:
                        s = np.array([a, b, c])
                        if i == j and not s.any():
                            continue
                        d = pos[j] - pos[i] + s @ cell
                        if np.linalg.norm(d) < rcut:
                            out.add((i, j, a, b, c))
    _ = inv
    return out


def test_periodic_layout_matches_brute_force():
    rng = np.random.default_rng(0)
    cell = np.array([[4.0, 0, 0], [0.5, 4.2, 0], [0.3, -0.2, 3.9]])
    pos = rng.uniform(0, 1, (7, 3)) @ cell
    numbers = np.array([8, 1, 1, 8, 1, 1, 6])
    types = species_to_types(numbers, [1, 6, 8])
    rcut = 3.5
    cap = required_capacity(pos, types, cell, [True] * 3, rcut, 3, "cutoff")
    centres, neigh, shifts = build_layout(pos, types, cell, [True] * 3, rcut, cap, "cutoff")
    got = set()
    for a in range(3):
        for c, i in enumerate(centres[a]):
            if i >= len(pos):
                continue
            for b in range(3):
                for s in range(cap.neighbors):
                    j = neigh[a][c, b, s]
                    if j < len(pos):
                        assert types[j] == b
                        got.add((int(i), int(j), *map(int, shifts[a][c, b, s])))
    assert got == brute_pairs(pos, cell, rcut)


def test_overflow_is_detected_and_potential_reallocates(trained_checkpoint, paracetamol):
    types = species_to_types(paracetamol.numbers[0], [1, 6, 7, 8])
    cap = required_capacity(paracetamol.positions[0], types, None, [False] * 3, 4.0, 4, "cutoff")
    small = Capacity(cap.centres, cap.neighbors - 1)
    with pytest.raises(NeighborOverflow, match="need capacity"):
        build_layout(paracetamol.positions[0], types, None, [False] * 3, 4.0, small, "cutoff")
    pot = lrnn.load(trained_checkpoint)
    pot.energy_forces(paracetamol.positions[0][:6], paracetamol.numbers[0][:6])
    c0 = pot.capacity
    e_big, f_big = pot.energy_forces(paracetamol.positions[0], paracetamol.numbers[0])
    assert pot.capacity.neighbors > c0.neighbors  # grown, not truncated
    fresh = lrnn.load(trained_checkpoint)
    e_ref, f_ref = fresh.energy_forces(paracetamol.positions[0], paracetamol.numbers[0])
    assert e_big == pytest.approx(e_ref, abs=1e-5)
    np.testing.assert_allclose(f_big, f_ref, atol=1e-5)


def test_unknown_species_and_padding_order():
    with pytest.raises(ValueError, match=r"species \['Cl'\]"):
        species_to_types(np.array([1, 17]), [1, 8])
    from lrnn.neighbors import sort_padding_last

    with pytest.raises(ValueError, match="padding"):
        sort_padding_last(np.array([[1, 0, 8]]))
