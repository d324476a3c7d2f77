import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests share the 2 cores with each other's subprocesses; one torch thread is faster under contention.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def chatforge(*args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "chatforge", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"chatforge {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> Path:
    """One whole micro-preset speedrun through the CLI, shared by the tests that read its artifacts."""
    run = tmp_path_factory.mktemp("runs") / "micro"
    chatforge("speedrun", "--preset", "micro", "--run", str(run))
    return run
