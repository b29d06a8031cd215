"""Profiles: the settings of every stage as plain dataclasses, overridable from the command line.

`smoke` runs in seconds (tests), `quick` trains everything small in about half an hour on a 2-core CPU, `paper` at
the paper's data sizes with enough epochs to converge, `paper-subset` (`make reproduce`) evaluates the shipped
`paper` networks on the first test images in minutes. Every artifact and result records the profile it was made
with.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from reabsnet.checks import check_setting
from reabsnet.errors import ReabsnetError


def later(default):
    """A setting added after models were shipped: it enters stage keys (`keyed`) only when set away from its
    default, so that every artifact made before it existed keeps its key."""
    return field(default=default, metadata={"keyed": "if-set"})


def keyed(config) -> dict:
    """`config` as stage keys digest it: dataclasses.asdict, less the `later` settings left at their default."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("keyed") == "if-set" and value == f.default:
            continue
        out[f.name] = keyed(value) if dataclasses.is_dataclass(value) else value
    return out


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
    schedule: str = "cosine"         # "cosine" (to zero over the run), "constant" (train_models.py) or "cyclic"
                                     # (0 -> lr at 2/5 of the run -> 0, Wong et al. 2020's fast adversarial training)
    train_size: int = 0              # use the first N training images; 0 = the whole split
    check_size: int = later(0)       # validate each epoch, and measure the trained network's test accuracy, on the
                                     # first N images of each split; 0 = all (the smoke profile: a forward pass
                                     # over 10,000 images takes 4.5 s on 2 cores)


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
    norm: str = "l2"                 # the DeepFool step's norm: "l2" (the paper) or "linf"
    extra_steps: int = 0             # further steps past the boundary, each the revision's mean step (not in paper)


@dataclass(frozen=True)
class AdamTrainConfig(TrainConfig):
    """A training run with Adam (Madry et al., Wong et al.); its own class so that the stage keys of the SGD runs,
    which digest their config, stay as they were."""

    optimizer: str = "adam"


@dataclass(frozen=True)
class BaselineConfig:
    """The Madry-style baseline of Table 3: the MNIST challenge network adversarially trained at L-inf eps.

    method "madry": Madry et al.'s recipe (PGD, 40 steps of 0.01 from a random start; Adam 1e-4, batch 50,
    100,000 iterations = 91 epochs), `madry_train`. "short-pgd": PGD of `short_steps` steps of 2.5 eps / steps
    (Madry's step rule) under `fast_train` (Adam, cyclic lr to 5e-3, Wong et al. 2020's schedule). "fgsm-rs": fast
    adversarial training (Wong et al. 2020: one FGSM step of `fgsm_step` from a random start) under `fast_train`;
    on this architecture it overfits catastrophically (measured: PGD-20 validation accuracy 10% after one epoch,
    0% after two), so it is offered but not the default. "auto": "madry" on a GPU, "short-pgd" on a CPU, where
    Madry's recipe takes days. Every report names the method used. Each epoch scores PGD accuracy on `val_images`
    validation images and the best epoch is kept (Rice et al. 2020's early stopping)."""

    method: str = "auto"
    eps: float = 0.3
    madry_steps: int = 40
    madry_step_size: float = 0.01
    madry_train: AdamTrainConfig = field(default_factory=lambda: AdamTrainConfig(
        epochs=91, batch_size=50, lr=1e-4, schedule="constant"))
    short_steps: int = 5
    fgsm_step: float = 0.375         # Wong et al.'s MNIST alpha (1.25 eps)
    fast_train: AdamTrainConfig = field(default_factory=lambda: AdamTrainConfig(
        epochs=6, batch_size=100, lr=5e-3, schedule="cyclic"))
    val_images: int = 1000
    val_steps: int = 20              # PGD on the validation images each epoch, step 2.5 eps / steps (Madry's rule)
    eval_images: int = 1000          # PGD-40 and PGD-100 accuracy on the first N test images
    eval_restarts: int = 5           # PGD-100 restarts (each on the images no earlier one broke)


@dataclass(frozen=True)
class EvalConfig:
    """The paper's evaluation (section 4.2): attacks on the master, first N test images."""

    n: int = 1000                    # FGSM, DeepFool, CW-L2 untargeted / targeted: 1,000 images in the paper
    n_cw_l2: int = 1000              # CW-L2 on its own count: it is the slowest attack on a CPU
    n_cw_linf: int = 100             # CW-L-inf untargeted / targeted: 100 images in the paper
    n_pgd: int = 1000                # PGD at each bound of the accuracy-vs-bound curve (not in the paper); the
                                     # adaptive evaluation's transfer check reads it, so keep it = adaptive.n
    n_cw_l2_baseline: int = 0        # CW-L2 against the Madry-style baseline (3x the master's cost); 0 = n_cw_l2
    preset: str = "paper"            # attack settings (reabsnet.attacks.presets); reports print the departures
    target_seed: int = 0             # seed of the random targets of targeted attacks
    figure_examples: int = 4         # examples per attack in Figure 4
    clean_images: int = 0            # clean accuracy, the natural images' detection scores and Table 3's clean labels
                                     # on the first N test images; 0 = all 10,000 (the paper). At least every set's
                                     # size: Table 3 falls back to an image's clean label


@dataclass(frozen=True)
class AdaptiveConfig:
    """The adaptive evaluation (not in the paper; its section 5 leaves it open): white-box attacks on the whole
    pipeline, on the first N test images, at each L-inf and L2 bound, against ReabsNet, its master alone and the
    Madry-style baseline."""

    n: int = 1000
    steps: int = 100                 # APGD steps (auto-attack's default)
    restarts: int = 3                # APGD restarts, each on the images no earlier one broke
    targets: int = 9                 # APGD-T's target classes (auto-attack's standard: the 9 top other classes)
    queries: int = 5000              # Square's query budget per image (auto-attack's standard)
    pipeline_queries: int = 5000     # ... against the pipeline's output, where each query runs the modifier
    n_cw: int = 200                  # joint CW-L2 (the slowest attack) on the first N of those images only
    # the bounds attacked, comma-separated; at least one L-inf bound: at the largest a sanity check compares the
    # attacks with a single step
    linf_bounds: str = "0.1,0.2,0.3"
    l2_bounds: str = "1.5,2"         # empty: no L2 bound (and no joint CW-L2)
    harden_n: int = 1000             # hardening attempts (at each L-inf bound) on the first N test images; 0 = skip
    harden_bounds: str = "0.1,0.2,0.3"   # the L-inf bounds they face, comma-separated
    # the adversarially trained guardian (reabsnet.train.hardened): fine-tuned from the paper guardian on joint
    # L-inf PGD against the Madry-style master, selected by the reject policy's validation score
    harden_guardian: bool = True
    harden_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=128, lr=0.005,
                                                                          train_size=10000))
    harden_eps: float = 0.3
    harden_steps: int = 10
    harden_val_images: int = 500
    max_clean_rejection: float = 0.01   # the hardening bar: at most 1% of clean images rejected
    enabled: bool = True
    # nested bounds: within a norm, each larger bound attacks only the images the smaller left standing (its
    # examples lie within the larger ball too). Off by default: measured, it saved no time (docs/benchmarks.md)
    nested: bool = later(False)
    # the binarization test (security.binarization) at each bound on the first N test images whose balls are
    # disjoint, with the suite's main attacks at these budgets; 0 = skip
    binarization: int = later(0)
    # "bf16": the Madry-style baseline's APGD-CE, APGD-DLR, APGD-T and Square search in bfloat16 (autocast), every
    # success judged in float32; "auto": bf16 where the CPU has native bfloat16 instructions and its timed pass is at
    # least 1.3x faster (runtime.search_precision). Measured 1.7-2.7x faster on the AMD CPU; as strong on the shipped
    # baseline, 2 points weaker at L-inf 0.3 on the quick one, so not the default (docs/benchmarks.md). Never FAB-T,
    # the distilled master or the defense (measured weaker there)
    precision: str = later("fp32")
    # the suite's steps to run, comma-separated names of `reabsnet suite` (security.suite); empty: every step
    suite: str = later("")
    # escalation: budget multiples, comma-separated and ascending ("3,10"): after the suite, the images still standing
    # are attacked again by every step at each multiple in turn until a round breaks at most `escalate_tolerance` of
    # the images in every verdict column; empty: off
    escalate: str = later("")
    escalate_tolerance: float = later(0.01)
    # a success margin in logits for every step that can take one (security.suite.Budget.success_margin): its
    # examples lie past the boundary by this much, not on it. 0: each attack's own rule
    success_margin: float = later(0.0)


@dataclass(frozen=True)
class AblationConfig:
    """`reabsnet ablate` (why Table 2's CW cells differ from the paper): fixed images, the first N test images of
    each set; every guardian variant trained with `seeds` seeds (profile seed, +1, ...) to measure its spread."""

    seeds: int = 3
    n_deepfool: int = 1000
    n_cw_l2: int = 200
    n_cw_linf: int = 100              # the paper's CW-Linf count
    n_cw_l2_reference: int = 20       # CW-L2 at the reference settings (9 x 10,000 iterations): hours per 1,000
    n_cw_linf_reference: int = 100    # CW-Linf at the reference settings (li_attack.py: 1,000 iterations per c)
    n_adaptive: int = 100             # joint APGD-DLR at L-inf 0.1 against every guardian variant
    n_cw_train: int = 1000            # factor c: CW-L2 and CW-Linf (untargeted) on the first N training images
    only_built: bool = False          # report the guardians already built, train none (a run stopped partway)
    reference_preset: str = "paper"   # factor a's stronger CW settings (the reference; smoke: "quick", for speed)


@dataclass(frozen=True)
class Profile:
    name: str
    dataset: str = "mnist"
    # the profile whose networks this one evaluates (its shipped ones, keys and all); "": its own
    networks: str = ""
    seed: int = 0
    # Defensive distillation (Papernot et al. 2016; paper section 3.3: T = 100).
    distill: bool = True
    temperature: float = 100.0
    init_epochs: int = 1             # train_models.py: teacher and student start from one epoch at T = 1
    master: TrainConfig = field(default_factory=TrainConfig)
    guardian: GuardianConfig = field(default_factory=GuardianConfig)
    modifier: ModifierConfig = field(default_factory=ModifierConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    @property
    def trained_as(self) -> str:
        """The profile name the networks are trained, keyed and shipped under."""
        return self.networks or self.name


_PAPER = Profile(
    name="paper",
    master=TrainConfig(epochs=30, batch_size=128, lr=0.05),
    # CW at the reference settings (10,000 iterations x 9 binary-search steps) takes hours per 1,000 images on
    # a 2-core CPU; on a CPU the paper profile uses the quick CW presets (override: --set eval.preset=paper).
    eval=EvalConfig(n=1000, n_cw_l2=1000, n_cw_linf=100, preset="quick"),
    # the shipped baseline's method on every device ("auto" would mean Madry's 91-epoch recipe on a GPU: a
    # different network, trained first); --set baseline.method=madry trains that one
    baseline=BaselineConfig(method="short-pgd"),
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        init_epochs=1,
        # sized for `make test` on 2 cores: every stage runs, on as few images as still show each effect. Half the
        # images at half the batch size take as many steps as the whole at the whole: the master reaches the same
        # validation accuracy (0.94) in 3,000 images at batch 64 as in 6,000 at 128, in 17 s instead of 28 on one
        # thread of the AMD CPU
        master=TrainConfig(epochs=2, batch_size=64, lr=0.05, train_size=3000, check_size=1000),
        # the guardian: 10 epochs on 400 DeepFool pairs at batch 64, validation accuracy 0.83 (800 pairs at batch
        # 128: 0.86 after 10 epochs, 0.64 after 3)
        guardian=GuardianConfig(train_images=400, val_images=100, shard_size=250,
                                train=TrainConfig(epochs=10, batch_size=64, lr=0.02)),
        eval=EvalConfig(n=50, n_cw_l2=10, n_cw_linf=5, n_pgd=10, n_cw_l2_baseline=5, preset="smoke",
                        figure_examples=2, clean_images=1000),
        baseline=BaselineConfig(method="short-pgd", short_steps=2, val_images=100, val_steps=5, eval_images=20,
                                eval_restarts=1,
                                fast_train=AdamTrainConfig(epochs=2, batch_size=50, lr=5e-3, schedule="cyclic",
                                                           train_size=1000, check_size=1000)),
        adaptive=AdaptiveConfig(n=10, steps=10, restarts=1, targets=2, queries=50, pipeline_queries=30,
                                n_cw=5, harden_n=10, harden_bounds="0.3", linf_bounds="0.1,0.3", l2_bounds="2",
                                harden_train=TrainConfig(epochs=1, batch_size=64, lr=0.005, train_size=256),
                                harden_steps=3, harden_val_images=50),
        ablation=AblationConfig(seeds=2, n_deepfool=100, n_cw_l2=20, n_cw_linf=10, n_cw_l2_reference=10,
                                n_cw_linf_reference=10, n_adaptive=10, n_cw_train=20,
                                reference_preset="quick"),
    ),
    "quick": Profile(
        name="quick",
        master=TrainConfig(epochs=3, batch_size=128, lr=0.05),
        guardian=GuardianConfig(train_images=20000, val_images=2000, shard_size=5000,
                                train=TrainConfig(epochs=3, batch_size=128, lr=0.02)),
        eval=EvalConfig(n=1000, n_cw_l2=200, n_cw_linf=50, n_pgd=100, n_cw_l2_baseline=50, preset="quick"),
        baseline=BaselineConfig(method="short-pgd", val_images=500, val_steps=10, eval_images=300, eval_restarts=1,
                                fast_train=AdamTrainConfig(epochs=2, batch_size=100, lr=5e-3, schedule="cyclic",
                                                           train_size=20000)),
        adaptive=AdaptiveConfig(n=100, steps=30, restarts=1, targets=9, queries=500, pipeline_queries=100,
                                n_cw=30, harden_n=0),
    ),
    "paper": _PAPER,
    # `make reproduce`: the shipped paper networks evaluated on the first test images, sized for 10 minutes on a
    # 2-core CPU, every cell beside the committed full-scale report's on the same networks (REPORT.md says so)
    "paper-subset": dataclasses.replace(
        _PAPER, name="paper-subset", networks="paper",
        eval=EvalConfig(n=200, n_cw_l2=40, n_cw_linf=10, n_pgd=100, n_cw_l2_baseline=40, preset="quick"),
        # the full suite at the L-inf bounds with smaller budgets (the report prints them): APGD 30 steps, 1 restart,
        # APGD-T and FAB-T on the 3 top other classes, Square 500 queries (100 through the modifier)
        adaptive=dataclasses.replace(_PAPER.adaptive, n=100, steps=30, restarts=1, targets=3, queries=500,
                                     pipeline_queries=100, linf_bounds="0.1,0.2,0.3", l2_bounds="", harden_n=0),
    ),
}


def bound_list(text: str) -> list[float]:
    """"0.1,0.2,0.3" -> [0.1, 0.2, 0.3]; "" -> [] (the ranges are checked with every other setting:
    reabsnet.checks)."""
    return [float(part) for part in text.split(",")] if text else []


def with_preset(profile: Profile, preset: str) -> Profile:
    """`profile` with its attack sets at another preset (the ablation's reference sets, say)."""
    return dataclasses.replace(profile, eval=dataclasses.replace(profile.eval, preset=preset))


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
    _check(profile)
    _check_across(profile)
    return profile


def _check_across(profile: Profile) -> None:
    """The rules that tie one setting to others (each setting's own range is `_check`'s)."""
    if profile.networks and profile.networks not in PROFILES:
        raise ReabsnetError(f"profile setting networks={profile.networks!r}: no such profile; choose one of: "
                            f"{', '.join(PROFILES)}")
    if not bound_list(profile.adaptive.linf_bounds):
        raise ReabsnetError(f"profile setting adaptive.linf_bounds={profile.adaptive.linf_bounds!r}: give at least one "
                            f"L-inf bound (a sanity check compares the attacks at the largest with a single step)")
    e = profile.eval
    largest = max(e.n, e.n_cw_l2, e.n_cw_linf, e.n_pgd, e.n_cw_l2_baseline)
    if e.clean_images and e.clean_images < largest:   # Table 3 falls back to an image's clean label
        raise ReabsnetError(f"profile setting eval.clean_images={e.clean_images}: must be 0 (all) or at least the "
                            f"largest attack set, {largest} images")


def _check(config, prefix: str = "") -> None:
    """Every setting within its range (reabsnet.checks), before any stage runs."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            _check(value, f"{prefix}{f.name}.")
        elif f.name != "name":
            check_setting(f"{prefix}{f.name}", value, "profile setting ")


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
