"""A user's model named on the command line: a checkpoint of a registered architecture (safetensors + sidecar, as
`save_model` writes it) or `module:function` / `file.py:function`, a function of no arguments that returns the
model with its weights loaded (the user's own code, run as such; no file is ever unpickled)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch.nn as nn

from reabsnet.errors import ReabsnetError
from reabsnet.models.checkpoint import load_model


def load_user_model(spec: str) -> tuple[nn.Module, dict]:
    """The model `spec` names (see the module's docstring), in eval mode, and its checkpoint's sidecar (or
    {"source": spec} for code)."""
    path = Path(spec)
    if path.suffix == ".safetensors" or (path.exists() and ":" not in spec):
        if not path.exists():
            raise ReabsnetError(f"{spec}: no such checkpoint")
        return load_model(path)
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ReabsnetError(f"{spec}: expected a .safetensors checkpoint, module:function or file.py:function")
    try:
        if where.endswith(".py"):
            if not Path(where).is_file():
                raise ReabsnetError(f"{where}: no such file")
            loaded = importlib.util.spec_from_file_location(Path(where).stem, where)
            module = importlib.util.module_from_spec(loaded)
            sys.modules.setdefault(loaded.name, module)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ReabsnetError:
        raise
    except Exception as e:      # the user's code: any error it raises is theirs to see, in one line
        raise ReabsnetError(f"{spec}: importing {where} failed ({type(e).__name__}: {e})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ReabsnetError(f"{spec}: {where} has no function {name!r}")
    try:
        model = factory()
    except Exception as e:
        raise ReabsnetError(f"{spec}: {name}() failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module) or not list(model.parameters()):
        raise ReabsnetError(f"{spec}: {name}() must return a torch.nn.Module with parameters, got "
                            f"{type(model).__name__}")
    return model.eval(), {"source": spec}
