"""What the benchmarks share: the set-up check, and what they measure of one command
(wall time, peak RSS, CPU time, stderr)."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def prepare(*tools: str) -> None:
    """Exit unless ``tools`` are installed; byte-compile the sources. Editable installs
    are not compiled: this times start-up as a user's installed copy starts, not with
    the sources compiled on every run."""
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (scripts/setup.sh installs it)")
    root = Path(__file__).resolve().parent.parent
    for src_dir in [root / "occystrap_core" / "src", *root.glob("plugins/*/src")]:
        compileall.compile_dir(src_dir, quiet=1)

def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` (a registry, say) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Peak RSS must be measured from a small parent: a child forked from the (large)
# benchmark process counts the parent's pages until it execs.
# Wall time is taken there too, from fork to exit: the parent's own start-up (an
# interpreter's, 50 ms here) is no tool's.
_MEASURE = """import os, sys, time
started = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nCPU {usage.ru_utime + usage.ru_stime} MAXRSS {usage.ru_maxrss} "
                 f"WALL {time.monotonic() - started}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Measured:
    seconds: float
    rss_kib: int
    cpu: float
    stderr: str


def run(cmd: list[str], env: Mapping[str, str] | None = None) -> Measured:
    """Run ``cmd`` (stdout discarded; ``env``: its whole environment) and measure it; exit
    the benchmark if it fails."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    rest, tail = proc.stderr.rsplit("\nCPU ", 1)
    cpu, rest_of_tail = tail.split(" MAXRSS ")
    rss, wall = rest_of_tail.split(" WALL ")
    return Measured(float(wall), int(rss), float(cpu), rest)
