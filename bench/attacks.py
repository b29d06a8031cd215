"""Our attacks beside foolbox, ART and torchattacks: same process, model, images and settings.

    python -m venv .venv-peers && .venv-peers/bin/pip install torch==2.13.0 -e . foolbox \
        adversarial-robustness-toolbox packaging && .venv-peers/bin/pip install --no-deps torchattacks
    .venv-peers/bin/python bench/attacks.py --model src/reabsnet/shipped/mnist/paper/master.safetensors

(the peers live in their own environment, beside `.venv`, so that `make test` never imports them).

Prints per attack and library: images/s, success rate, median L2 and L-inf of the successful examples, and our
speed-up over the fastest peer. Peers that lack an attack are skipped. Timings are wall clock on whatever device
the model is on; compare ratios, not absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from reabsnet import data
from reabsnet.attacks import ATTACKS, LowPrecision, finish, get_preset
from reabsnet.attacks.settings import attack_settings
from reabsnet.models import load_model, place, registry

BOX = (-0.5, 0.5)


class Shifted(nn.Module):
    """The model on [0, 1] inputs, for torchattacks, which assumes that range (distances are unchanged)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x - 0.5)


def peers(model: nn.Module, settings: dict[str, dict]) -> dict[str, dict[str, Callable]]:
    """attack -> library -> fn(x, y) returning adversarial x in [-0.5, 0.5]."""
    out: dict[str, dict[str, Callable]] = {k: {} for k in settings}
    pgd, df, l2, li = settings["pgd"], settings["deepfool"], settings["cw-l2"], settings["cw-linf"]
    ap = settings.get("apgd", {})
    sq, at, aa = settings.get("square", {}), settings.get("apgd-t", {}), settings.get("autoattack", {})
    fab = settings.get("fab-t", {})
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=BOX)

        def run_fb(attack, eps=None):
            return lambda x, y: attack(fmodel, x, y, epsilons=eps)[1]

        out["fgsm"]["foolbox"] = run_fb(fb.attacks.FGSM(), settings["fgsm"]["eps"])
        out["pgd"]["foolbox"] = run_fb(fb.attacks.LinfPGD(abs_stepsize=pgd["step_size"], steps=pgd["steps"],
                                                          random_start=True), pgd["eps"])
        out["deepfool"]["foolbox"] = run_fb(fb.attacks.L2DeepFoolAttack(
            steps=df["max_iter"], candidates=df["candidates"], overshoot=df["overshoot"], loss="logits"))
        out["cw-l2"]["foolbox"] = run_fb(fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=l2["binary_search_steps"], steps=l2["max_iterations"], stepsize=l2["learning_rate"],
            confidence=l2["confidence"], initial_const=l2["initial_const"], abort_early=True))
    except ImportError as exc:   # a peer not installed: its rows are left out, and said so
        print(f"foolbox unavailable: {exc}")
    try:
        from art.attacks.evasion import (
            AutoProjectedGradientDescent,
            CarliniL2Method,
            CarliniLInfMethod,
            DeepFool,
            FastGradientMethod,
            ProjectedGradientDescent,
            SquareAttack,
        )
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                clip_values=BOX, device_type="gpu" if next(model.parameters()).is_cuda else "cpu")

        def run_art(attack):
            return lambda x, y: torch.from_numpy(attack.generate(x.cpu().numpy(), y=np.eye(10)[y.cpu().numpy()]))

        n = 10 ** 6
        out["fgsm"]["ART"] = run_art(FastGradientMethod(clf, eps=settings["fgsm"]["eps"], batch_size=n))
        out["pgd"]["ART"] = run_art(ProjectedGradientDescent(clf, eps=pgd["eps"], eps_step=pgd["step_size"],
                                                             max_iter=pgd["steps"], num_random_init=1, batch_size=n,
                                                             verbose=False))
        out["deepfool"]["ART"] = run_art(DeepFool(clf, max_iter=df["max_iter"], epsilon=df["overshoot"],
                                                  nb_grads=df["candidates"], batch_size=n, verbose=False))
        out["cw-l2"]["ART"] = run_art(CarliniL2Method(
            clf, confidence=l2["confidence"], learning_rate=l2["learning_rate"],
            binary_search_steps=l2["binary_search_steps"], max_iter=l2["max_iterations"],
            initial_const=l2["initial_const"], batch_size=n, verbose=False))
        out["cw-linf"]["ART"] = run_art(CarliniLInfMethod(
            clf, confidence=li["confidence"], learning_rate=li["learning_rate"], max_iter=li["max_iterations"],
            batch_size=n, verbose=False))
        if "apgd" in out and ap["norm"] == "linf":
            out["apgd"]["ART"] = run_art(AutoProjectedGradientDescent(
                clf, norm=np.inf, eps=ap["eps"], eps_step=2 * ap["eps"], max_iter=ap["steps"], nb_random_init=1,
                batch_size=n, verbose=False,
                loss_type="difference_logits_ratio" if ap["loss"] == "dlr" else "cross_entropy"))
        if sq:
            out["square"]["ART"] = run_art(SquareAttack(clf, norm=np.inf if sq["norm"] == "linf" else 2,
                                                        eps=sq["eps"], max_iter=sq["queries"], p_init=sq["p_init"],
                                                        nb_restarts=1, batch_size=n, verbose=False))
    except ImportError as exc:   # a peer not installed: its rows are left out, and said so
        print(f"ART unavailable: {exc}")
    try:
        import torchattacks as ta

        shifted = Shifted(model).eval()

        def run_ta(attack):
            return lambda x, y: attack(x + 0.5, y) - 0.5

        out["fgsm"]["torchattacks"] = run_ta(ta.FGSM(shifted, eps=settings["fgsm"]["eps"]))
        out["pgd"]["torchattacks"] = run_ta(ta.PGD(shifted, eps=pgd["eps"], alpha=pgd["step_size"],
                                                   steps=pgd["steps"], random_start=True))
        out["deepfool"]["torchattacks"] = run_ta(ta.DeepFool(shifted, steps=df["max_iter"],
                                                             overshoot=df["overshoot"]))
        # torchattacks' CW has no binary search over c: one run at the initial constant
        out["cw-l2"]["torchattacks"] = run_ta(ta.CW(shifted, c=l2["initial_const"], kappa=l2["confidence"],
                                                    steps=l2["max_iterations"], lr=l2["learning_rate"]))
        if "apgd" in out:
            out["apgd"]["torchattacks"] = run_ta(ta.APGD(shifted, norm={"linf": "Linf", "l2": "L2"}[ap["norm"]],
                                                         eps=ap["eps"], steps=ap["steps"], n_restarts=1,
                                                         loss=ap["loss"], rho=ap["rho"], seed=0))
        norm = {"linf": "Linf", "l2": "L2"}
        if sq:
            out["square"]["torchattacks"] = run_ta(ta.Square(shifted, norm=norm[sq["norm"]], eps=sq["eps"],
                                                             n_queries=sq["queries"], p_init=sq["p_init"], seed=0))
        if at:
            out["apgd-t"]["torchattacks"] = run_ta(ta.APGDT(shifted, norm=norm[at["norm"]], eps=at["eps"],
                                                            steps=at["steps"], n_restarts=1, n_classes=10, seed=0))
        if fab:  # multi-targeted: the top n_classes - 1 other classes, as auto-attack's FAB-T
            out["fab-t"]["torchattacks"] = run_ta(ta.FAB(
                shifted, norm=norm[fab["norm"]], eps=fab["eps"], steps=fab["steps"], n_restarts=1,
                alpha_max=fab["alpha_max"], eta=fab["eta"], beta=fab["beta"], multi_targeted=True,
                n_classes=fab["targets"] + 1, seed=0))
        if aa:
            out["autoattack"]["torchattacks"] = run_ta(ta.AutoAttack(shifted, norm=norm[aa["norm"]], eps=aa["eps"],
                                                                     version="standard", n_classes=10, seed=0))
            # ... and its members keep torchattacks' default of 10 steps (auto-attack's are 100): the same
            # ensemble as ours, built from its parts with our settings, is the like-for-like row
            out["autoattack"]["torchattacks, our settings"] = run_ta(ta.MultiAttack([
                ta.APGD(shifted, norm=norm[aa["norm"]], eps=aa["eps"], steps=aa["steps"], loss="ce", n_restarts=1,
                        seed=0),
                ta.APGDT(shifted, norm=norm[aa["norm"]], eps=aa["eps"], steps=aa["steps"], n_restarts=1,
                         n_classes=aa["targets"] + 1, seed=0),
                ta.Square(shifted, norm=norm[aa["norm"]], eps=aa["eps"], n_queries=aa["queries"], n_restarts=1,
                          seed=0)]))
    except ImportError as exc:   # a peer not installed: its rows are left out, and said so
        print(f"torchattacks unavailable: {exc}")
    return out


def _median(v: torch.Tensor, ok: torch.Tensor) -> str:
    return f"{v[ok].median():.3f}" if ok.any() else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--preset", default="quick", help="settings for every library (default: quick)")
    parser.add_argument("--n", type=int, default=500, help="images for FGSM, PGD and DeepFool")
    parser.add_argument("--n-cw", type=int, default=100, help="images for CW-L2 and CW-Linf")
    parser.add_argument("--attacks", default="fgsm,pgd,deepfool,cw-l2,cw-linf",
                        help="comma-separated; also apgd, apgd-t, fab-t, square, autoattack")
    parser.add_argument("--libraries", default="reabsnet,foolbox,ART,torchattacks")
    parser.add_argument("--bf16", action="store_true", help="add the row of our attack searching in bfloat16 "
                        "(LowPrecision: autocast passes, every success confirmed and judged in float32)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _ = load_model(args.model)
    model = place(model, "cuda" if torch.cuda.is_available() else "cpu").eval()
    device = next(model.parameters()).device
    print(f"torch {torch.__version__}, " + (f"cuda ({torch.cuda.get_device_name(device)}), full fp32 (no TF32)"
                                            if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"))
    x_all, y_all = data.load("mnist").split("test")
    names = args.attacks.split(",")
    libraries = args.libraries.split(",")
    settings = {}
    for name, attack in ATTACKS.items():
        settings[name] = {**attack_settings(attack), **get_preset(name, args.preset).settings}
    table = peers(model, settings)
    print("| attack | library | images | images/s | success | median L2 | median Linf | our speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        n = args.n_cw if name.startswith("cw") else args.n
        x, y = x_all[:n].to(device), y_all[:n].to(device)
        runs = {"reabsnet": lambda x, y, name=name: ATTACKS[name](model, x, y, **get_preset(name, args.preset)
                                                                  .settings).x_adv}
        if args.bf16:
            runs["reabsnet, bf16 search"] = lambda x, y, name=name: ATTACKS[name](
                LowPrecision(model), x, y, **get_preset(name, args.preset).settings).x_adv
        if device.type == "cpu":     # the CPU chunking's share (GPUs always take the whole batch)
            runs["reabsnet, whole batch"] = lambda x, y, ours=runs["reabsnet"]: _whole_batch(ours, x, y)
        runs.update(table.get(name, {}))
        rows = {}
        # warm-up at the timed batch shape: oneDNN builds its kernels per shape, and whoever ran first would pay
        xw = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xw).sum(), xw)
        for lib, fn in runs.items():
            if lib.split(",")[0] not in libraries:
                continue
            # warm-up: one-off library initialisation; on a GPU at the timed shape, since CUDA loads each kernel
            # on its first launch and cuDNN picks kernels per shape (whoever ran first would pay for the others)
            fn(x, y) if device.type == "cuda" else fn(x[:4], y[:4])
            _sync(device)
            start = time.perf_counter()
            x_adv = fn(x, y)
            _sync(device)
            seconds = time.perf_counter() - start
            res = finish(model, x, torch.as_tensor(x_adv).to(device).float().view_as(x),
                         y, None, torch.zeros_like(y), BOX)
            rows[lib] = (n / seconds, res.success.float().mean().item(), _median(res.l2, res.success),
                         _median(res.linf, res.success))
        peer_rows = {k: v for k, v in rows.items() if not k.startswith("reabsnet")}
        fastest = max((v[0] for v in peer_rows.values()), default=None)
        # peers at least as strong as ours: success within 1 point and median L2 at most 5% above ours
        for lib, (speed, rate, l2, linf) in rows.items():
            up = ""
            if lib in ("reabsnet", "reabsnet, bf16 search") and fastest:
                strong = [v[0] for v in peer_rows.values() if v[1] >= rate - 0.01 and _le(v[2], l2)]
                up = f"{speed / fastest:.1f}x all; " + (f"{speed / max(strong):.1f}x as strong" if strong else
                                                        "no peer as strong")
            print(f"| {name} | {lib} | {n} | {speed:.1f} | {rate:.1%} | {l2} | {linf} | {up} |", flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":          # time the work, not its launch
        torch.cuda.synchronize(device)


def _whole_batch(run: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Our attack with the networks' CPU chunking off (the whole batch in one pass), to show that lever's share."""
    with registry.cpu_chunk(None):
        return run(x, y)


def _le(theirs: str, ours: str) -> bool:
    if ours == "-" or theirs == "-":
        return theirs == ours
    return float(theirs) <= 1.05 * float(ours)


if __name__ == "__main__":
    main()
