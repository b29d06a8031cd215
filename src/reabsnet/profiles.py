"""Profiles: the settings of every stage as plain dataclasses, overridable from the command line.

`smoke` runs in seconds (tests), `quick` in minutes on a 2-core CPU (`make reproduce`), `paper` at the paper's data
sizes with enough epochs to converge. Every artifact and result records the profile it was made with.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from reabsnet.errors import ReabsnetError


@dataclass(frozen=True)
class TrainConfig:
    """One supervised training run. Defaults follow Carlini & Wagner's train_models.py (SGD, lr 0.01, Nesterov
    momentum 0.9) except batch size and epochs, which profiles set for the hardware."""

    epochs: int = 50                 # train_models.py: 50 epochs
    batch_size: int = 128            # train_models.py uses 16; larger batches are 3x faster per epoch on CPU
    lr: float = 0.01                 # train_models.py: SGD lr 0.01
    momentum: float = 0.9            # train_models.py: momentum 0.9, Nesterov
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "cosine"         # "cosine" (to zero over the run) or "constant" (train_models.py)
    train_size: int = 0              # use the first N training images; 0 = the whole split


@dataclass(frozen=True)
class GuardianConfig:
    """The guardian's training data (DeepFool on the master, paper section 4.2) and its training run."""

    train_images: int = 0            # DeepFool on the first N training images; 0 = all 55,000 (the paper)
    val_images: int = 0              # ... and on the first N validation images; 0 = all 5,000
    shard_size: int = 5000           # DeepFool runs in shards saved as they finish, so a rerun resumes
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=128, lr=0.02))


@dataclass(frozen=True)
class ModifierConfig:
    """The modifier: two-class DeepFool against the guardian (paper section 3.6)."""

    threshold: float = 0.5           # flagged when P(adversarial) > threshold
    revise_to: float = 0.5           # revised until P(natural) >= revise_to (paper: just across the boundary)
    overshoot: float = 0.02          # DeepFool's overshoot (Moosavi-Dezfooli et al. 2016)
    max_iter: int = 50               # DeepFool's iteration cap


@dataclass(frozen=True)
class EvalConfig:
    """The paper's evaluation (section 4.2): attacks on the master, first N test images."""

    n: int = 1000                    # FGSM, DeepFool, CW-L2 untargeted / targeted: 1,000 images in the paper
    n_cw_l2: int = 1000              # CW-L2 on its own count: it is the slowest attack on a CPU
    n_cw_linf: int = 100             # CW-L-inf untargeted / targeted: 100 images in the paper
    preset: str = "paper"            # attack settings (reabsnet.attacks.presets); reports print the departures
    target_seed: int = 0             # seed of the random targets of targeted attacks
    figure_examples: int = 4         # examples per attack in Figure 4


@dataclass(frozen=True)
class Profile:
    name: str
    dataset: str = "mnist"
    seed: int = 0
    # Defensive distillation (Papernot et al. 2016; paper section 3.3: T = 100).
    distill: bool = True
    temperature: float = 100.0
    init_epochs: int = 1             # train_models.py: teacher and student start from one epoch at T = 1
    master: TrainConfig = field(default_factory=TrainConfig)
    guardian: GuardianConfig = field(default_factory=GuardianConfig)
    modifier: ModifierConfig = field(default_factory=ModifierConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        init_epochs=1,
        master=TrainConfig(epochs=2, batch_size=128, lr=0.05, train_size=6000),
        guardian=GuardianConfig(train_images=3000, val_images=500, shard_size=1500,
                                train=TrainConfig(epochs=2, batch_size=128, lr=0.02)),
        eval=EvalConfig(n=100, n_cw_l2=30, n_cw_linf=10, preset="smoke", figure_examples=2),
    ),
    "quick": Profile(
        name="quick",
        master=TrainConfig(epochs=3, batch_size=128, lr=0.05),
        guardian=GuardianConfig(train_images=20000, val_images=2000, shard_size=5000,
                                train=TrainConfig(epochs=3, batch_size=128, lr=0.02)),
        eval=EvalConfig(n=1000, n_cw_l2=200, n_cw_linf=50, preset="quick"),
    ),
    "paper": Profile(
        name="paper",
        master=TrainConfig(epochs=30, batch_size=128, lr=0.05),
        # CW at the reference settings (10,000 iterations x 9 binary-search steps) takes hours per 1,000 images on
        # a 2-core CPU; on a CPU the paper profile uses the quick CW presets (override: --set eval.preset=paper).
        eval=EvalConfig(n=1000, n_cw_l2=1000, n_cw_linf=100, preset="quick"),
    ),
}


def get_profile(name: str, overrides: typing.Sequence[str] = ()) -> Profile:
    """The named profile with `key=value` overrides applied (dotted keys reach nested configs: master.epochs=5)."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ReabsnetError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ReabsnetError(f"override {item!r}: expected key=value, e.g. master.epochs=5")
        profile = _override(profile, key.strip().split("."), value.strip(), item)
    return profile


def _override(obj, path: list[str], value: str, item: str):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields or name == "name":
        raise ReabsnetError(f"override {item!r}: no setting {name!r} (have: {', '.join(sorted(fields))})")
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            raise ReabsnetError(f"override {item!r}: {name!r} is a group; name one of its settings")
        return dataclasses.replace(obj, **{name: _override(current, path[1:], value, item)})
    if len(path) > 1:
        raise ReabsnetError(f"override {item!r}: {name!r} has no sub-settings")
    hint = typing.get_type_hints(type(obj))[name]
    return dataclasses.replace(obj, **{name: _parse(value, hint, item)})


def _parse(value: str, hint, item: str):
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value.lower() in ("none", "null") and type(None) in kinds:
        return None
    for kind in kinds:
        try:
            if kind is bool:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                continue
            if kind in (int, float, str):
                return kind(value)
        except ValueError:
            continue
    raise ReabsnetError(f"override {item!r}: {value!r} is not a valid {hint}")


def as_dict(profile: Profile) -> dict:
    return dataclasses.asdict(profile)
