"""Keep the messages native solvers print straight to the terminal out of a command's output.

LAPACK (through NumPy, SciPy and ARPACK) reports an illegal argument -- a NaN reaching ``dlascl``, say --
with ``** On entry to DLASCL parameter number 4 had an illegal value`` written to file descriptor 1 from C,
past Python's ``sys.stdout``: it would land in the middle of ``--json`` output. The commands check their
inputs for NaN and inf first, so this is a second line of defence for values that turn non-finite inside
a computation. While a measurement runs, descriptors 1 and 2 point at temporary files; afterwards every line
but the solvers' messages is written back where it was going.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

NATIVE_NOISE = re.compile(rb"^\s*(\*\* On entry to \w+|Intel MKL ERROR|ARPACK error|LAPACK error)")


@contextmanager
def native_noise_filtered():
    """Run the body with native output captured; write it back without the solvers' messages."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved, captured = {}, {}
    try:
        for fd in (1, 2):
            try:
                saved[fd] = os.dup(fd)
            except OSError:  # no such descriptor (a daemon): nothing to protect
                continue
            captured[fd] = tempfile.TemporaryFile()
            os.dup2(captured[fd].fileno(), fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
            with captured[fd] as handle:
                handle.seek(0)
                kept = b"".join(line for line in handle.read().splitlines(keepends=True)
                                if not NATIVE_NOISE.match(line))
            if kept:
                os.write(fd, kept)
