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

from reabsnet import commands
from reabsnet.commands import say
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
                   f"{DEFAULT_PROFILE}: the shipped paper networks on a subset of the test images, 7-9 minutes on "
                   "2 CPU cores; paper: the full-scale evaluation; quick and smoke train small networks first)")
    p.add_argument("--seed", type=int, help="override the profile's seed")
    p.add_argument("--dataset", help="mnist | fashion-mnist (default: the profile's, mnist)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set master.epochs=5 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    p.add_argument("--retrain", action="store_true",
                   help="train every network instead of taking the shipped one (reabsnet/shipped/<dataset>/<profile>/)")


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

    for add in (_data_and_training, _reports, _tools, _your_model):
        add(sub)
    return parser


def _data_and_training(sub) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True, parser_class=_Parser)
    fetch = data.add_parser("fetch", help="fetch, verify and cache a dataset")
    fetch.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist (default: mnist)")
    fetch.add_argument("--source", metavar="DIR", help="directory holding the four IDX files (.gz or raw)")
    _common(fetch)
    fetch.set_defaults(run=commands.cmd_data_fetch)

    train = sub.add_parser("train", help="train a network").add_subparsers(dest="what", required=True,
                                                                           parser_class=_Parser)
    master = train.add_parser("master", help="the master network, with defensive distillation (T=100)")
    _profile_args(master)
    master.add_argument("--no-distill", action="store_true", help="train at temperature 1, without distillation")
    _common(master)
    master.set_defaults(run=commands.cmd_train_master)

    madry = train.add_parser("madry", help="the Madry-style adversarially trained baseline of Table 3")
    _profile_args(madry)
    _common(madry)
    madry.set_defaults(run=commands.cmd_train_madry)


def _reports(sub) -> None:
    reproduce = _report_parser(sub, "reproduce", "the whole paper (master, guardian, attacks, Tables 1-3, Figure 4, "
                               "plots) and the adaptive attacks", "REPORT.md, results.json and the figure",
                               commands.cmd_reproduce)
    reproduce.add_argument("--workers", type=int, default=1, metavar="N",
                           help="build the attack sets with N processes sharing the device first (a GPU: 8; "
                           "default 1)")
    _report_parser(sub, "ablate", "why Table 2 differs: the revision's factors one at a time (CW strength, guardian "
                   "sharpness, modifier), several guardian seeds each", "ABLATION.md, ablation.json and ablation.png",
                   commands.cmd_ablate)
    _report_parser(sub, "harden", "the hardening attempts alone: ReabsNet with the Madry-style master and an "
                   "adversarially trained guardian against the full adaptive suite", "HARDENING.md and hardening.json",
                   commands.cmd_harden)


def _tools(sub) -> None:
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
    classify.set_defaults(run=commands.cmd_classify)

    attack = sub.add_parser("attack", help="run an attack on a trained model and save the adversarial set")
    attack.add_argument("--model", required=True, metavar="PATH", help="a .safetensors checkpoint made by reabsnet")
    attack.add_argument("--attack", required=True,
                        help="fgsm | pgd | deepfool | cw-l2 | cw-linf | apgd | apgd-t | fab-t | square | autoattack | "
                        "selective-pgd | orthogonal-pgd | logit-matching (the last three on JointLogits)")
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
    attack.set_defaults(run=commands.cmd_attack)


def _your_model(sub) -> None:
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
    fitg.set_defaults(run=commands.cmd_fit_guardian)

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
    ev.add_argument("--suite", metavar="STEP,...", help="the adaptive suite's steps to run, comma-separated "
                    "(`reabsnet suite` lists them; default: all). --attacks names the attacks of Tables 1-2")
    ev.add_argument("--escalate", default="", metavar="F,...", help="budget multiples, ascending (e.g. 3,10): after "
                    "the suite, the images still standing are attacked again at each in turn until a round breaks "
                    "at most --tolerance of them (default: off)")
    ev.add_argument("--tolerance", type=float, default=0.01, help="the share of images a round may break and the "
                    "rates still count as converged (default: 0.01)")
    ev.add_argument("--margin", type=float, default=0.0, metavar="M", help="a success margin in logits: every "
                    "step that takes one goes on past the boundary until the label it wants leads by M (default: 0, "
                    "each attack's own rule)")
    ev.add_argument("--out", required=True, metavar="DIR", help="where REPORT.md, results.json and the attack sets "
                    "go; a rerun reuses the sets")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    ev.set_defaults(run=commands.cmd_evaluate)

    suite = sub.add_parser("suite", help="list the adaptive suite's steps in order, each with its network, budget "
                           "and verdicts")
    suite.add_argument("--budget", default="standard", help="standard | quick | smoke: whose budget to show "
                       "(default: standard)")
    suite.set_defaults(run=commands.cmd_suite)


def _fail(line: str, code: int) -> int:
    """Print the one-line error; under torchrun also hand it to the launcher (its reply file), whose failure
    summary then shows this line as the rank's root cause instead of "To enable traceback see: ..."."""
    say(line)
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
        code = args.run(args) or 0
    except ReabsnetError as e:
        code = _fail(f"reabsnet: error{where}: {e}", 2)
    except KeyboardInterrupt:
        say("reabsnet: interrupted; finished stages are kept and a rerun resumes from there")
        code = 130
    except Exception as e:  # a bug, not bad input: one line unless --debug
        if args.debug:
            raise
        code = _fail(f"reabsnet: internal error{where}: {type(e).__name__}: {e} (rerun with --debug for the "
                     "traceback)", 1)
    finally:
        distributed.shutdown()
    if distributed.launched():
        distributed.leave(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
