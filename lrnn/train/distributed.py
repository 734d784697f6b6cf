"""Multi-process (multi-host) training through :func:`jax.distributed.initialize`.

One process per host (or per GPU); every process runs the same ``lrnn train`` command.
After :func:`initialize`, ``jax.devices()`` lists the devices of all processes, and the
trainer shards each batch over all of them (``train.devices: auto``): every process reads
the same data, feeds its own devices' part of each batch, keeps a replica of the
parameters and optimiser state, and process 0 alone writes checkpoints and metrics.

On CPU the collectives go through gloo, so the same code runs as two processes on one
machine (``tests/train/test_multiprocess.py``)."""

from __future__ import annotations

import jax


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> tuple[int, int]:
    """Join a distributed run; returns ``(process_index, process_count)``.

    ``coordinator_address`` is ``host:port`` of process 0.  Under Slurm or Open MPI all
    three arguments may be omitted (JAX detects them).  Must run before any JAX
    computation in the process."""
    if (num_processes is None) != (process_id is None):
        raise ValueError("give both num_processes and process_id, or neither (auto-detection)")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is outside 0..{num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return jax.process_index(), jax.process_count()
