"""What the machine offers a computation: memory (host or device), devices, and one-line refusals.

Used by configs (a study's estimated peak memory) and by instruments (a Krylov basis, a Gram matrix, cached
autograd graphs): each estimates its peak before starting and refuses with one line naming the knob to turn,
instead of running into the out-of-memory killer.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

MEMORY_ENV = "OVERPARAM_AVAILABLE_MEMORY"   # bytes the memory checks may assume (tests, containers)
DEVICES = ("cpu", "cuda", "mps", "auto")


class MemoryBudgetError(ValueError):
    """A computation would need more memory than it may take; the message names the knob to turn."""


def available_memory(device=None) -> int | None:
    """Bytes a new computation may take on ``device`` (host memory by default): $OVERPARAM_AVAILABLE_MEMORY if
    set, else free CUDA memory for a CUDA device, else the kernel's MemAvailable (Linux), else the free
    physical pages; None when none of them is known."""
    override = os.environ.get(MEMORY_ENV, "").strip()
    if override:
        try:
            return int(float(override))
        except (ValueError, OverflowError):
            raise ValueError(f"${MEMORY_ENV} must be a number of bytes, got {override!r}") from None
    if device is not None and str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def check_budget(what: str, needed: float, knob: str, limit: float | None = None, device=None) -> None:
    """Refuse (MemoryBudgetError) when ``needed`` bytes exceed ``limit`` (default: what is available)."""
    limit = available_memory(device) if limit is None else limit
    if limit is not None and needed > limit:
        raise MemoryBudgetError(f"{what} needs about {format_bytes(needed)} of memory, more than the "
                                f"{format_bytes(limit)} allowed; {knob}")


@contextmanager
def out_of_memory_as(what: str, knob: str) -> Iterator[None]:
    """An out-of-memory error inside becomes the same one-line MemoryBudgetError as a refusal before starting."""
    try:
        yield
    except MemoryError:
        raise MemoryBudgetError(f"{what} ran out of memory; {knob}") from None
    except RuntimeError as exc:
        text = str(exc)
        if "out of memory" in text.lower() or "can't allocate memory" in text.lower():
            raise MemoryBudgetError(f"{what} ran out of memory; {knob}") from None
        raise


def resolve_device(device: str | None = None):
    """``cpu``, ``cuda[:i]``, ``mps``, or ``auto`` (CUDA, else MPS, else CPU) as a torch.device; one-line
    ValueError for a device this machine does not have."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: {device!r} is not allowed; choose one of: cpu, cuda, cuda:N, mps, auto")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but this machine has no CUDA device; use cpu or auto")
    if base == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError(f"device: {device!r} asked for, but MPS is not available here; use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: {device!r} is not a device name; choose cpu, cuda, cuda:N, mps or auto") from None
