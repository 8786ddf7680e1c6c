"""What a fresh interpreter holds in sys.modules after a piece of code, for tests that keep
heavy libraries out of start-up (they count modules, never time)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence


def loaded_after(
    code: str, roots: Sequence[str], env: Mapping[str, str] | None = None
) -> list[str]:
    """The modules under any of roots that running code in a new interpreter loaded; what
    code prints on stdout is dropped, and it may end with SystemExit."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('\\nloaded:', *sorted(m for m in sys.modules"
        f" if m.split('.')[0] in {tuple(roots)!r})))\n"
        f"{code}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        timeout=120,
    )
    last = done.stdout.rstrip("\n").rpartition("\n")[2]
    assert last.startswith("loaded:"), (done.returncode, done.stdout, done.stderr)
    return last.split()[1:]


def schedctl_code(*args: str) -> str:
    """Code that runs schedctl with args as its command line, as the installed script does."""
    return f"sys.argv = ['schedctl', *{args!r}]\nfrom schedctl.main import main\nmain()"
