"""What each `reabsnet` subcommand does (the parser and the error handling are `reabsnet.cli`'s): each parses its
arguments into the one library call it makes and prints the result. Heavy modules are imported inside each command,
so the parser and --help stay light."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from reabsnet.errors import ReabsnetError

log = logging.getLogger("reabsnet")


def cmd_suite(args) -> None:
    from reabsnet.security.api import BUDGETS
    from reabsnet.security.suite import MORE_AT_THRESHOLDS, TUNED, Suite

    if args.budget not in BUDGETS:
        raise ReabsnetError(f"budget {args.budget!r}: choose one of {', '.join(BUDGETS)}")
    print(f"The standard adaptive suite, budget {args.budget!r} (run on: every image, or the survivors of the "
          "steps before; verdicts: revise = ReabsNet, reject = the reject policy at 0.5, reject@fpr = at each "
          "calibrated threshold, worst / autoattack = each baseline):")
    print("\n".join(Suite.standard().lines(BUDGETS[args.budget])))
    print(f"Hardening adds {TUNED.name} after joint-apgd-t. Not in the standard suite, the other joint steps "
          "re-aimed at each calibrated threshold: "
          + ", ".join(s.name for s in MORE_AT_THRESHOLDS) + ". Pick steps with `evaluate --suite a,b` or "
          "`reproduce --set adaptive.suite=a,b`; add to the standard suite with `+name` (`--suite +joint-fpr-square`).")


def _suite(text: str | None):
    """The steps named on the command line (None: the whole suite), refused in one line when one is unknown."""
    from reabsnet.security.suite import Suite, parse_names

    return Suite.named(parse_names(text)) if text else None


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
    profile = get_profile(args.profile, overrides)
    _suite(profile.adaptive.suite)       # an unknown step is refused before any stage runs
    return profile


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
    from reabsnet.evaluation.any_model import evaluate_oblivious
    from reabsnet.models import place
    from reabsnet.models.checkpoint import load_model
    from reabsnet.report import machine, write_user
    from reabsnet.security.api import evaluate_adaptive

    suite = _suite(args.suite)
    escalate = _factors(args.escalate)
    budget = _budget(args.budget, args.margin)
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
                               budget=budget, box=box, threshold=args.threshold, temperature=args.temperature,
                               x_calibration=x_calibration, binarization=args.binarization, suite=suite,
                               escalate=escalate, tolerance=args.tolerance, out=out / "adaptive")
    results["adaptive"] = result.results
    write_user(out, results)
    rates = ", ".join(f"{name}: {rate:.3f}" for name, rate in result.robust_accuracy().items())
    print(f"robust accuracy ({result.policy}, worst case over the suite): {rates}")
    alarm = result.results["alarm"]
    print("masking alarm: " + ("; ".join(alarm["evidence"]) if alarm["raised"] else "not raised"))
    print(f"report: {out / 'REPORT.md'}")


def _budget(name: str, margin: float):
    """--budget's named budget, with --margin's success margin (refused in one line where negative)."""
    import dataclasses

    from reabsnet.checks import check_setting
    from reabsnet.security.api import BUDGETS

    if name not in BUDGETS:
        raise ReabsnetError(f"budget {name!r}: choose one of {', '.join(BUDGETS)}")
    check_setting("margin", margin, "--")
    return dataclasses.replace(BUDGETS[name], success_margin=margin) if margin else name


def _factors(text: str) -> tuple[int, ...]:
    """--escalate's "3,10" -> (3, 10), refused in one line where it is not whole multiples above 1, ascending."""
    from reabsnet.checks import check_setting
    from reabsnet.security.api import factors

    check_setting("escalate", text, "--")
    return factors(text)


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
    from reabsnet.studies.ablation import ablate, write

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
            say(f"reabsnet: error: {e}")
            failed += 1
            continue
        for path in skipped:
            say(f"reabsnet: skipped {path}: not an image or .npy/.npz file")
        for path in files:   # one file at a time: memory stays bounded by the per-file limits
            try:
                names, x = read_inputs(path, invert=args.invert)
            except ReabsnetError as e:
                say(f"reabsnet: error: {e}")
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


def say(line: str) -> None:
    """One line on stderr in one write: print() writes the text and the newline separately, and under torchrun
    another rank's line could land between them."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
