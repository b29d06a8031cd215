"""The `reabsnet` command. Thin: parse, call one function, print. Errors a user can cause become one line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from reabsnet.errors import ReabsnetError

log = logging.getLogger("reabsnet")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", metavar="DIR", help="data and artifact home (default: $REABSNET_HOME or ~/.cache/reabsnet)")


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    p.add_argument("--seed", type=int, help="override the profile's seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set master.epochs=5 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reabsnet", description="ReabsNet: detect and revise adversarial examples (Chen et al. 2017)")
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
    if getattr(args, "no_distill", False):
        overrides.append("distill=false")
    return get_profile(args.profile, overrides)


def cmd_train_master(args) -> None:
    from reabsnet import data
    from reabsnet.runtime import resolve_device
    from reabsnet.train import train_master

    profile = _profile(args)
    device = resolve_device(args.device)
    splits = data.load(profile.dataset, home=args.home)
    model, meta = train_master(profile, splits, device, home=args.home)
    kind = f"distilled at T={meta['temperature']:g}" if meta.get("distilled") else "not distilled"
    acc = meta["metrics"]["test_accuracy"]
    print(f"master ({kind}, profile {profile.name}, seed {profile.seed}): test accuracy {acc:.2%} "
          f"on {len(splits.test_y):,} images")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="reabsnet: %(message)s",
                        stream=sys.stderr)
    try:
        args.run(args)
    except ReabsnetError as e:
        print(f"reabsnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reabsnet: interrupted; finished stages are kept and a rerun resumes from there", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: one line unless --debug
        if args.debug:
            raise
        print(f"reabsnet: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
