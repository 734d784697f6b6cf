"""ModelInputs: the typed pytree a model reads (lrnn.inputs)."""

import jax
import numpy as np
import pytest

from lrnn import bundle, models
from lrnn.batch import make_inputs
from lrnn.inputs import ModelInputs
from lrnn.system import Dataset
from tests.conftest import TINY_MODEL


def test_make_inputs_is_a_pytree_that_slices_per_structure_and_round_trips_through_system(paracetamol):
    _, mcfg = models.model_config(dict(TINY_MODEL, type_map=[1, 6, 7, 8]))
    ds = Dataset(paracetamol.positions[:3], paracetamol.numbers[:3], paracetamol.energy[:3])
    inputs, _ = make_inputs(ds, mcfg, dtype=np.float64)
    assert isinstance(inputs, ModelInputs) and inputs.positions.shape == (3, ds.positions.shape[1], 3)
    one = jax.tree.map(lambda x: x[1], inputs)  # the structure axis is a leading axis of every leaf
    assert isinstance(one, ModelInputs) and one.plans == {}
    np.testing.assert_array_equal(one.positions, ds.positions[1])
    system, layout, plans = bundle.from_inputs(one)
    again = bundle.model_inputs(system, layout, plans)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)


def test_unknown_plan_is_an_error_naming_it(paracetamol):
    _, mcfg = models.model_config(dict(TINY_MODEL, type_map=[1, 6, 7, 8]))
    inputs, _ = make_inputs(Dataset(paracetamol.positions[:1], paracetamol.numbers[:1], [0.0]), mcfg)
    with pytest.raises(ValueError, match="unknown plans \\['fmm'\\]"):
        inputs.with_plans({"fmm": object()})
    with pytest.raises(AttributeError):
        inputs.fmm  # noqa: B018 - a misspelt field fails, no silent None
