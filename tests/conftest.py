"""Shared fixtures.  Tests run in float64 where they compare against finite differences;
the float32 default path is exercised by the training tests."""

import atexit
import gc
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)
os.environ.setdefault("MPLBACKEND", "Agg")


#: XLA:CPU's LLVM back end at optimisation level 0 for the tests: compiling takes about half
#: as long, and most of the suite's time is compilation of small models (measured: the MD,
#: hierarchical-SOG and trainer modules 495 s -> 320 s on one core).  The arithmetic is the
#: same IEEE float operations (XLA:CPU does not use fast-math either way), only less optimised,
#: so no tolerance changes; the library, the demo and experiments keep the default level.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _share_compiled_code():
    """Tests compile fast (:data:`FAST_COMPILE`, added to ``XLA_FLAGS`` unless the caller
    chose a level) and share one persistent XLA compilation cache for the whole run, this
    process and every subprocess it starts (pytest-xdist's test workers of ``make test``, and
    the CLI, notebook, multi-process and fake-device tests, inherit the environment).
    Most of the suite's time is compilation, and its tests compile the same small models over
    and over; a cache hit returns the same executable the compiler would, so no test changes
    meaning.  The cache starts empty (a fresh directory, removed at exit) unless the caller set
    ``JAX_COMPILATION_CACHE_DIR``."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        path = tempfile.mkdtemp(prefix="lrnn-test-xla-cache-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


_share_compiled_code()

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_MODEL = {"type": "deeppot_se", "rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8], "axis_neurons": 2,
              "fit": [8, 8]}


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_executables():
    """Drop jit caches after each test module.  Every XLA:CPU executable keeps a few memory
    maps; the whole suite in one process compiles enough of them to pass the kernel's
    ``vm.max_map_count`` (65,530), after which LLVM's next mmap fails and the interpreter
    dies (abort or segfault) inside a compile.  Freed executables return their maps."""
    yield
    jax.clear_caches()
    gc.collect()


def shared_file(rel: str) -> Path:
    """A file of ../shared/data: skipped where absent, but a failure in CI (``CI`` set),
    where the data must be there."""
    p = SHARED / rel
    if not p.exists():
        msg = f"reference data {p} not available (../shared/data is absent on this machine)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must have it")
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def paracetamol():
    from lrnn.data import read

    return read(Path(__file__).resolve().parents[1] / "lrnn/data/embedded/rmd17_paracetamol_train01_subset.npz")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """A run config that trains the tiny model for a few steps (float32)."""
    def make(out=None, **train):
        out = out or tmp_path_factory.mktemp("run")
        tr = {"max_steps": 40, "batch_size": 4, "checkpoint_every_s": 0, "progress": False,
              "lr_start": 1e-3, "lr_stop": 1e-4, "decay_steps": 10}
        tr.update(train)
        return {"data": {"train": "embedded:paracetamol", "test": "embedded:paracetamol-test",
                         "n_train": 40, "n_val": 8, "n_test": 16, "seed": 1},
                "model": dict(TINY_MODEL), "train": tr, "output": str(out)}
    return make


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_config):
    from lrnn.train import load_config, train

    cfg = load_config(tiny_config(snapshot_at_s=[1e-6]))  # a snapshot at the first validation
    train(cfg, quiet=True)
    return Path(cfg["output"]) / "checkpoint"


#: a latent-Coulomb term: its charges are equilibrated to the total charge (a "charge term")
LATENT_COULOMB = {"long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [4]}]}


def nacl_potential(**model):
    """An untrained float64 Potential over Na and Cl (TINY_MODEL plus ``model`` options)."""
    from lrnn.md import untrained_potential

    return untrained_potential([11, 17], dict(TINY_MODEL, **model), seed=1, dtype="float64", output_scale=0.1)


@pytest.fixture(scope="session")
def lc_pot():
    """An untrained Na/Cl potential with a latent-Coulomb term (its energy depends on the total charge)."""
    return nacl_potential(**LATENT_COULOMB)


def nacl_cluster(numbers):
    """Positions (Å) of a small open Na/Cl cluster, neighbours 2.6-2.9 Å apart, and the
    atomic numbers; sum(Z) is odd for an odd number of atoms (Na3Cl2: 67), even for an even one."""
    import numpy as np

    base = np.array([[0.0, 0.0, 0.0], [2.8, 0.0, 0.0], [2.7, 2.9, 0.2], [0.1, 2.7, 0.0], [1.4, 1.3, 2.6]])
    return base[: len(numbers)], np.asarray(numbers)
