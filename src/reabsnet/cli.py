"""The `reabsnet` command. Thin: parse, call one function, print. Errors a user can cause become one line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from reabsnet.errors import ReabsnetError

log = logging.getLogger("reabsnet")

# profile names, without importing torch for --help (tests check they match reabsnet.profiles.PROFILES)
PROFILE_NAMES = ("smoke", "quick", "paper", "paper-subset")
DEFAULT_PROFILE = "paper-subset"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", metavar="DIR", help="data/artifact home (default: $REABSNET_HOME or ~/.cache/reabsnet)")


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"{' | '.join(PROFILE_NAMES)} (default: "
                   f"{DEFAULT_PROFILE}: the shipped paper networks on a subset of the test images, about 6 minutes on "
                   "2 CPU cores; paper: the full-scale evaluation; quick and smoke train small networks first)")
    p.add_argument("--seed", type=int, help="override the profile's seed")
    p.add_argument("--dataset", help="mnist | fashion-mnist (default: the profile's, mnist)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set master.epochs=5 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    p.add_argument("--retrain", action="store_true",
                   help="train every network instead of taking the shipped one (models/<dataset>/<profile>/)")


def _report_parser(sub, name: str, help: str, outputs: str, run) -> argparse.ArgumentParser:
    """A profile-driven command that writes a report (reproduce, ablate, harden)."""
    p = sub.add_parser(name, help=help)
    _profile_args(p)
    p.add_argument("--copy-to", metavar="DIR", help=f"also copy {outputs} to DIR")
    _common(p)
    p.set_defaults(run=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    from reabsnet import __version__

    parser = _Parser(prog="reabsnet", description="ReabsNet: detect and revise adversarial examples (Chen, Meng, "
                     "Sun, Tang and Zhu 2017, arXiv:1712.08250)")
    parser.add_argument("--version", action="version", version=f"reabsnet {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True, parser_class=_Parser)
    fetch = data.add_parser("fetch", help="fetch, verify and cache a dataset")
    fetch.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist (default: mnist)")
    fetch.add_argument("--source", metavar="DIR", help="directory holding the four IDX files (.gz or raw)")
    _common(fetch)
    fetch.set_defaults(run=cmd_data_fetch)

    train = sub.add_parser("train", help="train a network").add_subparsers(dest="what", required=True,
                                                                           parser_class=_Parser)
    master = train.add_parser("master", help="the master network, with defensive distillation (T=100)")
    _profile_args(master)
    master.add_argument("--no-distill", action="store_true", help="train at temperature 1, without distillation")
    _common(master)
    master.set_defaults(run=cmd_train_master)

    madry = train.add_parser("madry", help="the Madry-style adversarially trained baseline of Table 3")
    _profile_args(madry)
    _common(madry)
    madry.set_defaults(run=cmd_train_madry)

    reproduce = _report_parser(sub, "reproduce", "the whole paper (master, guardian, attacks, Tables 1-3, Figure 4, "
                               "plots) and the adaptive attacks", "REPORT.md, results.json and the figure",
                               cmd_reproduce)
    reproduce.add_argument("--workers", type=int, default=1, metavar="N",
                           help="build the attack sets with N processes sharing the device first (a GPU: 8; "
                           "default 1)")
    _report_parser(sub, "ablate", "why Table 2 differs: the revision's factors one at a time (CW strength, guardian "
                   "sharpness, modifier), several guardian seeds each", "ABLATION.md, ablation.json and ablation.png",
                   cmd_ablate)
    _report_parser(sub, "harden", "the hardening attempts alone: ReabsNet with the Madry-style master and an "
                   "adversarially trained guardian against the full adaptive suite", "HARDENING.md and hardening.json",
                   cmd_harden)

    classify = sub.add_parser("classify", help="classify images with ReabsNet (guardian, modifier, master)")
    classify.add_argument("inputs", nargs="+", metavar="FILE",
                          help="PNG/JPEG images, .npy/.npz batches, or directories of them")
    classify.add_argument("--profile", default="paper", help="whose trained networks to use: the run's, else the "
                          "shipped ones (default: paper, the shipped paper networks)")
    classify.add_argument("--master", metavar="PATH", help="master checkpoint (default: the profile's)")
    classify.add_argument("--guardian", metavar="PATH", help="guardian checkpoint (default: the profile's)")
    classify.add_argument("--threshold", type=float, help="flag when P(adversarial) exceeds this (default: profile)")
    classify.add_argument("--invert", action="store_true", help="invert images (dark digits on a light ground)")
    classify.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist: whose run to use (default: "
                          "mnist)")
    classify.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    _common(classify)
    classify.set_defaults(run=cmd_classify)

    attack = sub.add_parser("attack", help="run an attack on a trained model and save the adversarial set")
    attack.add_argument("--model", required=True, metavar="PATH", help="a .safetensors checkpoint made by reabsnet")
    attack.add_argument("--attack", required=True,
                        help="fgsm | pgd | deepfool | cw-l2 | cw-linf | apgd | apgd-t | fab-t | square | autoattack")
    attack.add_argument("--targeted", action="store_true", help="attack toward a random other class (seeded)")
    # --images: the same, for torchrun, whose own parser takes --n for one of its options
    attack.add_argument("--n", "--images", dest="n", type=int, default=1000,
                        help="the first N images of the split (default: 1000)")
    attack.add_argument("--split", default="test", help="test | val | train (default: test)")
    attack.add_argument("--preset", default="paper", help="smoke | quick | paper (default: paper, the reference)")
    attack.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an attack setting, e.g. --set eps=0.2 (repeatable)")
    attack.add_argument("--seed", type=int, default=0, help="seed for targets and random starts (default: 0)")
    attack.add_argument("--batch-size", type=int, default=500,
                        help="images per attack batch (under torchrun: per shard) (default: 500)")
    attack.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist (default: mnist)")
    attack.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    attack.add_argument("--out", metavar="PATH", help="output .npz (default: ./<attack>[-targeted]-<preset>-n<N>.npz)")
    _common(attack)
    attack.set_defaults(run=cmd_attack)

    model_help = ("a .safetensors checkpoint of a registered architecture (reabsnet.models.save_model), or "
                  "module:function / file.py:function: a function of no arguments returning the model with weights")
    data_help = ("labelled images: a .npz with arrays x (N,H,W / N,H,W,C / N,C,H,W; uint8 or float) and y "
                 "(integer labels), or a folder of class subfolders of images")
    box_help = ("the pixel range the model takes, e.g. 0,1 (default: uint8 pixels map to 0,1; float pixels: 0,1 "
                "or -0.5,0.5, whichever holds them)")
    fitg = sub.add_parser("fit-guardian", help="train a guardian for your own classifier on your own images "
                          "(DeepFool on the master, then natural vs adversarial)")
    fitg.add_argument("--master", required=True, metavar="SPEC", help=model_help)
    fitg.add_argument("--data", required=True, metavar="PATH", help=data_help)
    fitg.add_argument("--box", metavar="LOW,HIGH", help=box_help)
    fitg.add_argument("--out", required=True, metavar="DIR", help="where guardian.safetensors (+ .json) and its "
                      "DeepFool data go; a rerun resumes and reuses them")
    fitg.add_argument("--n", type=int, default=0, help="the first N images only (default: 0, all); the last tenth "
                      "of them validates")
    fitg.add_argument("--epochs", type=int, help="training epochs (default: 10)")
    fitg.add_argument("--lr", type=float, help="learning rate (default: 0.02 with SGD on 1x28x28 images, the "
                      "paper profile's; else 1e-3 with Adam)")
    fitg.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    fitg.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    fitg.set_defaults(run=cmd_fit_guardian)

    ev = sub.add_parser("evaluate", help="evaluate your classifier (and guardian): attacks on the master "
                        "(Tables 1-2) and the adaptive suite, written to REPORT.md and results.json")
    ev.add_argument("--master", required=True, metavar="SPEC", help=model_help)
    ev.add_argument("--guardian", metavar="PATH", help="a guardian checkpoint (reabsnet fit-guardian's); without "
                    "one the master alone faces the adaptive suite (AutoAttack's standard ensemble)")
    ev.add_argument("--data", required=True, metavar="PATH", help=data_help)
    ev.add_argument("--box", metavar="LOW,HIGH", help=box_help)
    ev.add_argument("--n", type=int, default=100, help="the first N images (default: 100)")
    ev.add_argument("--norm", default="linf", help="linf | l2 (default: linf)")
    ev.add_argument("--bounds", default="8/255", help="comma-separated radii, fractions allowed (default: 8/255)")
    ev.add_argument("--budget", default="quick", help="standard | quick | smoke: the adaptive attacks' budgets "
                    "(default: quick: APGD 30 steps, Square 500 queries; standard: AutoAttack's)")
    ev.add_argument("--policy", default="revise", help="revise | reject: the headline rate (both are reported)")
    ev.add_argument("--attacks", default="fgsm,deepfool,cw-l2-u,cw-l2-t,cw-linf-u,cw-linf-t",
                    help="attacks crafted on the master (Tables 1-2), comma-separated, or none (default: all six)")
    ev.add_argument("--preset", default="quick", help="their settings: smoke | quick | paper (default: quick)")
    ev.add_argument("--fgsm-eps", type=float, help="FGSM's eps (default: the first bound)")
    ev.add_argument("--temperature", type=float, default=1.0, help="the master's distillation temperature, undone "
                    "by the cross-entropy attacks (default: 1)")
    ev.add_argument("--threshold", type=float, default=0.5, help="flag when P(adversarial) exceeds this "
                    "(default: 0.5)")
    ev.add_argument("--calibration", metavar="PATH", help="natural images (a .npz or a class-folder tree, not the "
                    "evaluated ones) on which the guardian's thresholds at 1%% and 5%% false positives are set, for "
                    "the reject policy's rates there")
    ev.add_argument("--binarization", type=int, default=0, metavar="N", help="run the binarization test "
                    "(Zimmermann et al. 2022: does each attack find an example known to exist?) at every bound on "
                    "N images (default: 0, skip)")
    ev.add_argument("--out", required=True, metavar="DIR", help="where REPORT.md, results.json and the attack sets "
                    "go; a rerun reuses the sets")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    ev.set_defaults(run=cmd_evaluate)
    return parser


def cmd_data_fetch(args) -> None:
    from reabsnet import data

    spec = data.get_spec(args.dataset)
    fetched = data.fetch(spec, home=args.home, source=args.source)
    how = "verified cache" if fetched.reused else "fetched and verified"
    print(f"{spec.name}: {how}, from {fetched.source}; cache {fetched.path} (sha256 {fetched.sha256[:12]})")


def _profile(args):
    from reabsnet.profiles import get_profile

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "dataset", None):
        from reabsnet.data import get_spec

        overrides.append(f"dataset={get_spec(args.dataset).name}")
    if getattr(args, "no_distill", False):
        overrides.append("distill=false")
    return get_profile(args.profile, overrides)


def is_main() -> bool:
    from reabsnet import distributed

    return distributed.is_main()


def _device(args, dataset: str = "mnist"):
    """The device for this process; under torchrun also join the process group (this rank's GPU by LOCAL_RANK)
    and let rank 0 fetch the dataset before the other ranks read it."""
    from reabsnet import data, distributed
    from reabsnet.runtime import resolve_device

    device = distributed.init(resolve_device(args.device))
    if distributed.active():
        if distributed.is_main():
            data.load(dataset, home=args.home)
        distributed.barrier()
    return device


def _shipped(args):
    from reabsnet.stages import SHIPPED_MODELS

    return None if args.retrain else SHIPPED_MODELS


def cmd_train_master(args) -> None:
    from reabsnet import data
    from reabsnet.train import train_master

    profile = _profile(args)
    device = _device(args, profile.dataset)
    splits = data.load(profile.dataset, home=args.home)
    model, meta = train_master(profile, splits, device, args.home, _shipped(args))
    kind = f"distilled at T={meta['temperature']:g}" if meta.get("distilled") else "not distilled"
    acc = meta["metrics"]["test_accuracy"]
    print(f"master ({kind}, profile {profile.name}, seed {profile.seed}): test accuracy {acc:.2%} "
          f"on {len(splits.test_y):,} images")


def cmd_train_madry(args) -> None:
    from reabsnet import data
    from reabsnet.train import train_madry

    profile = _profile(args)
    device = _device(args, profile.dataset)
    splits = data.load(profile.dataset, home=args.home)
    _, meta = train_madry(profile, splits, device, args.home, _shipped(args))
    m = meta["metrics"]
    print(f"madry baseline (profile {profile.name}, seed {profile.seed}; {meta['recipe']}):")
    print(f"  clean accuracy {m['clean_accuracy']:.2%} on {len(splits.test_y):,} test images")
    for key, title in (("pgd40", "PGD-40"), ("pgd100_ce", f"PGD-100 x{m['restarts']} (cross-entropy)"),
                       ("pgd100_margin", f"PGD-100 x{m['restarts']} (margin)"), ("worst", "worst case of these")):
        r = m[key]
        print(f"  {title}: accuracy {r['rate']:.2%} ({r['k']}/{r['n']}) at eps {m['eps']}")


def _box(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ReabsnetError(f"--box {text!r}: expected LOW,HIGH, e.g. 0,1") from None
    if low >= high:
        raise ReabsnetError(f"--box {text!r}: LOW must be below HIGH")
    return low, high


def _user_inputs(args, n: int = 0):
    """The user's master (on the device) and data (the first n images; 0: all), checked against each other."""
    from reabsnet.checks import check_data
    from reabsnet.data.user import load_user_data
    from reabsnet.models import place
    from reabsnet.models.user import load_user_model
    from reabsnet.runtime import resolve_device

    if n < 0:
        raise ReabsnetError(f"--n {n}: must be 0 (all) or more")
    device = resolve_device(args.device)
    x, y, box = load_user_data(args.data, _box(args.box))
    x, y = x[:n or None], y[:n or None]
    master, meta = load_user_model(args.master)
    master = place(master, device).eval()
    classes = check_data(master, x, y, box, args.data)
    return master, meta, x, y, box, classes, device


def cmd_fit_guardian(args) -> None:
    import dataclasses

    from reabsnet.train.guardian import default_recipe, fit_guardian

    master, _, x, y, box, _, device = _user_inputs(args, args.n)
    train = default_recipe(tuple(x.shape[1:]))
    for name, value in (("epochs", args.epochs), ("lr", args.lr)):
        if value is not None:
            if not value > 0:
                raise ReabsnetError(f"--{name} {value}: must be positive")
            train = dataclasses.replace(train, **{name: value})
    out = Path(args.out)
    guardian, meta = fit_guardian(master, x, y_train=y, box=box, train=train, seed=args.seed, out=out,
                                  device=device)
    s = meta["train_set"]
    print(f"guardian: {out / 'guardian.safetensors'} (validation accuracy {meta['metrics']['val_accuracy']:.2%}; "
          f"trained on {s['kept']:,} DeepFool pairs of {s['images']:,} images, median L2 {s['median_l2']:.3g})")


def _fraction(text: str) -> float:
    num, sep, den = text.partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError):
        raise ReabsnetError(f"--bounds: {text!r} is not a number or fraction") from None


def cmd_evaluate(args) -> None:
    from reabsnet.artifacts import model_sha256
    from reabsnet.defense import ReabsNet
    from reabsnet.evaluation.any_model import evaluate_adaptive, evaluate_oblivious
    from reabsnet.evaluation.report import machine, write_user
    from reabsnet.models import place
    from reabsnet.models.checkpoint import load_model

    bounds = [_fraction(b) for b in args.bounds.split(",") if b.strip()]
    attacks = [] if args.attacks == "none" else [a.strip() for a in args.attacks.split(",") if a.strip()]
    if args.guardian is None and attacks:
        attacks = []     # Tables 1-2 measure a guardian
    master, _, x, y, box, classes, device = _user_inputs(args, args.n)
    guardian = None
    if args.guardian:
        if not Path(args.guardian).exists():
            raise ReabsnetError(f"{args.guardian}: no such checkpoint")
        guardian = place(load_model(args.guardian)[0], device).eval()
    out = Path(args.out)
    results = {"command": _command_line("reabsnet evaluate"), "master": args.master, "guardian": args.guardian,
               "master_sha256": model_sha256(master), "machine": machine(),
               "data": {"source": args.data, "n": len(x), "shape": list(x.shape[1:]), "classes": classes,
                        "box": list(box)}}
    if guardian is not None:
        results["guardian_sha256"] = model_sha256(guardian)
    if attacks:
        defense = ReabsNet(master, guardian, threshold=args.threshold, box=box).eval()
        fgsm = {"fgsm": {"eps": args.fgsm_eps or bounds[0]}} if "fgsm" in attacks else {}
        results["oblivious"] = evaluate_oblivious(defense, x, y, attacks=attacks, preset=args.preset, settings=fgsm,
                                                  temperature=args.temperature, out=out / "oblivious")
    x_calibration = None
    if args.calibration:
        from reabsnet.data.user import load_user_data

        x_calibration = load_user_data(args.calibration, box)[0]
    result = evaluate_adaptive(master, guardian, x, y, norm=args.norm, bounds=bounds, policy=args.policy,
                               budget=args.budget, box=box, threshold=args.threshold, temperature=args.temperature,
                               x_calibration=x_calibration, binarization=args.binarization, out=out / "adaptive")
    results["adaptive"] = result.results
    write_user(out, results)
    rates = ", ".join(f"{name}: {rate:.3f}" for name, rate in result.robust_accuracy().items())
    print(f"robust accuracy ({result.policy}, worst case over the suite): {rates}")
    print(f"report: {out / 'REPORT.md'}")


def _command_line(default: str) -> str:
    import shlex

    return "reabsnet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else default


def cmd_reproduce(args) -> None:
    from reabsnet import distributed
    from reabsnet.artifacts import copy_files
    from reabsnet.reproduce import REPORT_FILES, reproduce

    profile = _profile(args)
    if not 1 <= args.workers <= 64:
        raise ReabsnetError(f"--workers {args.workers}: must be between 1 and 64")
    if args.workers > 1 and distributed.launched():
        raise ReabsnetError("--workers splits one process's device; under torchrun the ranks do that: use one")
    device = _device(args, profile.dataset)
    prebuilt = None
    if args.workers > 1:
        from reabsnet.prebuild import prebuild

        prebuilt = prebuild(profile, device, args.workers, home=args.home, shipped=_shipped(args), quiet=args.quiet)
    out = reproduce(profile, device, home=args.home, command=_command_line("reabsnet reproduce"),
                    shipped=_shipped(args), prebuilt=prebuilt)
    if is_main():
        out = copy_files(out, REPORT_FILES, args.copy_to)
        print(f"report: {out / 'REPORT.md'}")


def cmd_ablate(args) -> None:
    from reabsnet.artifacts import copy_files
    from reabsnet.evaluation.ablation import ablate, write

    profile = _profile(args)
    device = _device(args, profile.dataset)
    out, results = ablate(profile, device, home=args.home, command=_command_line("reabsnet ablate"),
                          shipped=_shipped(args))
    if is_main():
        write(out, results)
        out = copy_files(out, ("ABLATION.md", "ablation.json", "ablation.png"), args.copy_to)
        print(f"ablation: {out / 'ABLATION.md'}")


def cmd_harden(args) -> None:
    from reabsnet.artifacts import copy_files
    from reabsnet.reproduce import harden

    profile = _profile(args)
    if not profile.adaptive.harden_n:
        raise ReabsnetError("adaptive.harden_n is 0: nothing to harden (set it to the number of test images)")
    out, _ = harden(profile, _device(args, profile.dataset), home=args.home, command=_command_line("reabsnet harden"),
                    shipped=_shipped(args))
    if is_main():
        out = copy_files(out, ("HARDENING.md", "hardening.json"), args.copy_to)
        print(f"hardening: {out / 'HARDENING.md'}")


def cmd_classify(args) -> int:
    import torch

    from reabsnet.checks import check_setting
    from reabsnet.data.images import list_inputs, read_inputs
    from reabsnet.defense import ReabsNet
    from reabsnet.models import load_model, place
    from reabsnet.profiles import get_profile
    from reabsnet.runtime import resolve_device
    from reabsnet.stages import SHIPPED_MODELS, run_dir, shipped_dir

    profile = get_profile(args.profile)
    threshold = args.threshold if args.threshold is not None else profile.modifier.threshold
    check_setting("threshold", threshold, "--")
    device = resolve_device(args.device)
    run = run_dir(args.dataset, profile.name, args.home)
    shipped = shipped_dir(args.dataset, profile.trained_as, SHIPPED_MODELS)
    paths = {}
    for role in ("master", "guardian"):   # given, else the run directory's, else the shipped one
        found = [p for p in (run / f"{role}.safetensors", shipped / f"{role}.safetensors") if p.exists()]
        paths[role] = getattr(args, role) or (found[0] if found else run / f"{role}.safetensors")
        if not os.path.exists(paths[role]):
            raise ReabsnetError(f"no {role} at {paths[role]}; train it with `reabsnet reproduce --profile "
                                f"{profile.name}`, pass --{role} PATH, or use the shipped networks (--profile paper)")
    master = place(load_model(paths["master"], expect="master")[0], device)
    guardian = place(load_model(paths["guardian"], expect="guardian")[0], device)
    m = profile.modifier
    defended = ReabsNet(master, guardian, threshold=threshold, revise_to=max(threshold, m.revise_to),
                        overshoot=m.overshoot, max_iter=m.max_iter, norm=m.norm, extra_steps=m.extra_steps).eval()
    failed = 0
    for item in args.inputs:
        try:
            files, skipped = list_inputs(item)
        except ReabsnetError as e:
            _say(f"reabsnet: error: {e}")
            failed += 1
            continue
        for path in skipped:
            _say(f"reabsnet: skipped {path}: not an image or .npy/.npz file")
        for path in files:   # one file at a time: memory stays bounded by the per-file limits
            try:
                names, x = read_inputs(path, invert=args.invert)
            except ReabsnetError as e:
                _say(f"reabsnet: error: {e}")
                failed += 1
                continue
            pred = defended.predict_batches(x.to(torch.float32))
            for i, name in enumerate(names):
                verdict = "adversarial" if pred.flagged[i] else "natural"
                revised = f"revised (L2 {pred.revision_l2[i]:.3f})" if pred.flagged[i] else "not revised"
                print(f"{name}: label {int(pred.label[i])}; guardian: {verdict} "
                      f"(P(adversarial) {pred.p_adversarial[i]:.3f}); {revised}")
    return 2 if failed else 0


def cmd_attack(args) -> None:
    import json
    import shutil
    from pathlib import Path

    from reabsnet import data, distributed
    from reabsnet.attacks import get_attack, get_preset, random_targets
    from reabsnet.attacks.run import run_attack, save_set
    from reabsnet.attacks.settings import parse_settings
    from reabsnet.models import load_model, place

    attack = get_attack(args.attack)
    preset = get_preset(args.attack, args.preset)
    settings = {**preset.settings, **parse_settings(attack, args.overrides)}
    if args.split not in ("train", "val", "test"):
        raise ReabsnetError(f"unknown split {args.split!r}; choose train, val or test")
    if args.n <= 0 or args.batch_size <= 0:
        raise ReabsnetError("--n and --batch-size must be positive")
    out = Path(args.out or f"{args.attack}{'-targeted' if args.targeted else ''}-{args.preset}-n{args.n}.npz")
    if out.suffix != ".npz":
        raise ReabsnetError(f"--out {out}: the adversarial set is written as .npz")
    model, model_meta = load_model(args.model)   # a wrong path fails before any rank fetches the dataset
    device = _device(args, args.dataset)
    model = place(model, device).eval()
    splits = data.load(args.dataset, home=args.home)
    x, y = splits.split(args.split)
    x, y = x[:args.n], y[:args.n]
    if "seed" in settings or args.attack == "pgd":
        settings["seed"] = args.seed
    target = random_targets(y, int(model(x[:1].to(device)).shape[1]), args.seed) if args.targeted else None
    if distributed.active():    # torchrun: shards of --batch-size images across the ranks, rank 0 writes
        from reabsnet.artifacts import stage_key
        from reabsnet.evaluation.paper import sharded_attack

        key = stage_key("attack-cli", args.attack, settings, args.seed, args.split, len(y), model_meta["sha256"],
                        splits.sha256, args.batch_size)
        result, _ = sharded_attack(attack, model, x, y, target, settings, out.parent / f".{out.stem}-parts" / key,
                                   key, shard=args.batch_size, desc=args.attack)
    else:
        result = run_attack(attack, model, x, y, target=target, settings=settings, batch_size=args.batch_size,
                            desc=args.attack, device=device)
    meta = {"attack": args.attack, "targeted": args.targeted, "preset": preset.name, "preset_note": preset.note,
            "settings": settings, "seed": args.seed, "split": args.split, "n": len(y), "dataset": splits.name,
            "data_sha256": splits.sha256, "model": str(args.model), "model_sha256": model_meta["sha256"]}
    if distributed.is_main():
        side = save_set(out, x, y, target, result, meta)
        shutil.rmtree(out.parent / f".{out.stem}-parts", ignore_errors=True)
        print(json.dumps({"out": str(out), **side["summary"]}, indent=None))
    distributed.barrier()


def _say(line: str) -> None:
    """One line on stderr in one write: print() writes the text and the newline separately, and under torchrun
    another rank's line could land between them."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _fail(line: str, code: int) -> int:
    """Print the one-line error; under torchrun also hand it to the launcher (its reply file), whose failure
    summary then shows this line as the rank's root cause instead of "To enable traceback see: ..."."""
    _say(line)
    reply = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if reply:
        with contextlib.suppress(OSError):   # the launcher's summary is a courtesy; the line above is the error
            Path(reply).write_text(json.dumps({"message": line, "timestamp": int(time.time())}))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from reabsnet import distributed

    args = build_parser().parse_args(argv)
    # under torchrun: rank 0 logs, the others only warn; an error line names its rank
    rank = int(os.environ.get("RANK", "0")) if distributed.launched() else 0
    where = f" (rank {rank})" if distributed.launched() else ""
    logging.basicConfig(level=logging.WARNING if args.quiet or rank else logging.INFO,
                        format="reabsnet: %(message)s", stream=sys.stderr)
    try:
        code = args.run(args)
    except ReabsnetError as e:
        return _fail(f"reabsnet: error{where}: {e}", 2)
    except KeyboardInterrupt:
        _say("reabsnet: interrupted; finished stages are kept and a rerun resumes from there")
        return 130
    except Exception as e:  # a bug, not bad input: one line unless --debug
        if args.debug:
            raise
        return _fail(f"reabsnet: internal error{where}: {type(e).__name__}: {e} (rerun with --debug for the "
                     "traceback)", 1)
    finally:
        distributed.shutdown()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
