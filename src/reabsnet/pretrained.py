"""The shipped networks by name, as timm's `create_model(name, pretrained=True)` gives them:
`load_pretrained("mnist-paper")` is the paper's ReabsNet (distilled master, guardian, modifier) in one line.

The weights are the package's `reabsnet/shipped/<dataset>/<profile>/` checkpoints (package data: in a wheel and in a
clone alike), each verified by its SHA-256 like every
other artifact before it is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.models import load_model, place
from reabsnet.profiles import Profile, get_profile
from reabsnet.stages import SHIPPED_MODELS, shipped_dir

# name -> (dataset, profile, what): "reabsnet" the defended pipeline, else the checkpoint of that name alone
PRETRAINED = {
    "mnist-paper": ("mnist", "paper", "reabsnet"),
    "mnist-paper-madry": ("mnist", "paper", "madry"),
}


def pretrained_names() -> list[str]:
    """The names `load_pretrained` takes."""
    return list(PRETRAINED)


def build_reabsnet(profile: Profile, master: nn.Module, guardian: nn.Module) -> ReabsNet:
    """ReabsNet around `master` and `guardian` with the profile's modifier settings, in eval mode."""
    m = profile.modifier
    return ReabsNet(master, guardian, threshold=m.threshold, revise_to=m.revise_to, overshoot=m.overshoot,
                    max_iter=m.max_iter, norm=m.norm, extra_steps=m.extra_steps).eval()


def load_pretrained(name: str, device: torch.device | str = "cpu", root: str | Path | None = None) -> nn.Module:
    """A shipped network in eval mode on `device`: "mnist-paper" is the paper's ReabsNet (`net.master`,
    `net.guardian`, `net(x)` the master's logits on the revised input, `net.predict(x)` the full record), the
    networks of the committed paper report; "mnist-paper-madry" the Madry-style baseline of Table 3. Inputs are
    (N, 1, 28, 28) in [-0.5, 0.5]. `root` is a folder of shipped networks (default: the package's
    `reabsnet/shipped/`)."""
    if name not in PRETRAINED:
        raise ReabsnetError(f"unknown pretrained network {name!r}; choose one of: {', '.join(PRETRAINED)}")
    dataset, profile, what = PRETRAINED[name]
    folder = shipped_dir(dataset, profile, Path(root) if root is not None else SHIPPED_MODELS)
    if not folder.is_dir():
        raise ReabsnetError(f"{folder}: no shipped networks there; the package carries them in reabsnet/shipped/ "
                            "(reinstall it), or pass root=<a folder of them>")

    def load(role: str) -> nn.Module:
        return place(load_model(folder / f"{role}.safetensors", expect=role)[0], device).eval()

    if what == "reabsnet":
        return build_reabsnet(get_profile(profile), load("master"), load("guardian"))
    return load(what)
