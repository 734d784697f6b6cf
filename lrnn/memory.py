"""Memory a compiled evaluation needs, against what the device has: a clear error before
running, rather than an out-of-memory crash part-way through.

XLA reports, for a compiled executable, the bytes of its arguments, outputs and temporary
buffers (:meth:`jax.stages.Compiled.memory_analysis`); these are allocated when it runs.
The available memory is the accelerator's free memory (``memory_stats``), or on CPU the
kernel's ``MemAvailable``."""

from __future__ import annotations

import os

import jax


class InsufficientMemory(MemoryError):
    """A requested evaluation needs more memory than the device has available."""


def required_bytes(compiled) -> int | None:
    """Bytes a compiled executable allocates when run (arguments, outputs and temporaries,
    aliased outputs counted once); None where XLA does not report it."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # backends without the analysis
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def available_bytes(device=None) -> int | None:
    """Free memory of ``device`` (default: the first device) in bytes; None if unknown."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(compiled, n_atoms: int, limit_bytes: int | None = None, hint: str = "") -> int | None:
    """Raise :class:`InsufficientMemory` naming ``n_atoms`` and the bytes needed when the
    executable needs more than ``limit_bytes`` (default: :func:`available_bytes`); returns
    the bytes needed (None if unknown)."""
    need = required_bytes(compiled)
    have = available_bytes() if limit_bytes is None else int(limit_bytes)
    if need is not None and have is not None and need > have:
        raise InsufficientMemory(
            f"energy and forces for {n_atoms} atoms need {need / 2**30:.2f} GiB, but only "
            f"{have / 2**30:.2f} GiB are available{hint}")
    return need
