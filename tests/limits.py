"""A cap on how much memory code under test may reserve, so that a test can prove "nothing large is allocated"."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator

import pytest

MiB = 1 << 20


def _address_space() -> int:
    """This process's current virtual address space in bytes (Linux /proc/self/status VmSize)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def allocation_limit(extra_bytes: int = 256 * MiB) -> Iterator[None]:
    """Within the block, any allocation that would grow the address space by more than `extra_bytes` fails
    (torch: RuntimeError "can't allocate memory", numpy/Python: MemoryError) instead of happening.

    RLIMIT_AS is lowered for the block and restored after it; the soft limit may be raised back because only the
    soft one changes. Allocations fail before a page is touched, so a test of a 51 GB request is safe to run. Do not
    start subprocesses inside the block (they inherit the limit).
    """
    if sys.platform != "linux":
        pytest.skip("the allocation limit reads /proc/self/status (Linux)")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
