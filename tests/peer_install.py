"""The peer libraries' import for the `peers` tests: installed into the running environment when missing (they
need the package registry)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import ModuleType


def import_or_install(module: str, *installs: list[str]) -> ModuleType:
    """Import `module`; if it is missing, run `pip install -q <args>` for each argument list, then import it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        for args in installs:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)
        return importlib.import_module(module)
