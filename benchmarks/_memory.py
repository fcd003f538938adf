"""Peak memory of the current process, for the benchmarks that measure each run in its own process."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB.

    Read from VmHWM: ``ru_maxrss`` survives fork + exec, so a child started by a parent that had
    built a large data set would report the parent's peak instead of its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
