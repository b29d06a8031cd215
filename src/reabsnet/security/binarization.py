"""The binarization test (Zimmermann, Brendel, Tramer and Carlini, NeurIPS 2022): does an attack find an
adversarial example that is known to exist?

Per test image x, a binary task is built around it: points inside the bound (x and random points within
(1 - gap) eps, class 0) against points on the bound's surface (and one beyond it, class 1). A linear readout on
the defended model's frozen features (the input of its last linear layer) is fitted to separate them exactly, and
the defended model with this readout in place of its last layer is attacked from x, unchanged. Some point within
eps is classified 1 by construction, so a sound attack succeeds on (nearly) every image; one that fails where an
example must exist cannot be trusted to show robustness on that defense. Reference: google-research/
active-adversarial-tests, `active_tests/decision_boundary_binarization.py` and the detector case study
`case_studies/dla/binarization_test.py` (defaults: 10 inner points, 49 boundary points, gap 0.05).

Three defended models, as the adaptive suite attacks them:
- "classifier": a plain network (the Madry-style baseline, a master alone).
- "reject": the master behind the guardian, a flagged input rejected. The readout's class-1 boundary points are
  the master's PGD examples scaled onto the surface (which the guardian tends to flag) plus one random surface
  point the guardian accepts, so the example that must exist is one the guardian lets through; the attack wins
  with class 1 unflagged. `inverted`: the guardian's verdict reversed (the attack must end flagged) with one
  flagged PGD point among random ones: the authors' control that an attack is not helped by the detector itself.
- "revise": ReabsNet; the features are the master's on the modifier's revision, so the readout is fitted to what
  the pipeline sees, and the attacks go through the modifier (BPDA, unrolled) or evade the guardian (joint).

Batched: the readouts of all images are fitted together, and one `Binarized` module holds them all, choosing per
input the readout of the test image whose eps-ball it lies in (the balls of the images tested together are
disjoint: checked), so the attacks run on the whole batch as they run in the suite, finished examples leaving it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from reabsnet.attacks import BOX, get_attack, pgd
from reabsnet.attacks.adaptive import JointLogits
from reabsnet.attacks.common import Box, frozen
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.rates import wilson
from reabsnet.security.suite import REJECTING, Budget, Suite

PASS_RATE = 0.95      # an attack passes when it finds the example that must exist on at least this share of images


class Penultimate(nn.Module):
    """A network's features: the input of its last `nn.Linear` (the layer the readout replaces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ReabsnetError("the binarization test needs a network whose last layer is nn.Linear")
        self.model, self.last = model, linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = []
        handle = self.last.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return torch.cat([f.flatten(1) for f in seen])    # one part per chunk where the model runs in chunks


class Inverted(nn.Module):
    """A two-class guardian with its classes swapped: it flags exactly what the original accepts."""

    def __init__(self, guardian: nn.Module):
        super().__init__()
        self.guardian = guardian

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.guardian(x).flip(1)


def distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row distance between a (N, ...) and b (N, ...)."""
    d = (a - b).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


class Binarized(nn.Module):
    """Two logits (inner, boundary) = readout_i(features(x)) / 2 * (-1, 1), where i is the test image whose
    eps-ball holds x (the nearest anchor in the bound's norm; the balls are disjoint, so that is the one)."""

    def __init__(self, features: nn.Module, weight: torch.Tensor, bias: torch.Tensor, anchors: torch.Tensor,
                 norm: str):
        super().__init__()
        self.features, self.norm = features, norm
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("anchors", anchors.flatten(1))

    def route(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1)
        p = float("inf") if self.norm == "linf" else 2.0
        return torch.cdist(flat, self.anchors, p=p).argmin(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = self.route(x)
        s = (self.features(x) * self.weight[i]).sum(1) + self.bias[i]
        return torch.stack([-s, s], 1) / 2


def _to_radius(x: torch.Tensor, delta: torch.Tensor, radius: torch.Tensor, norm: str, box: Box) -> torch.Tensor:
    """x + c delta clipped to the box, with the factor c per row found by bisection so that the clipped point lies
    at `radius` from x (clipping only shortens a step, so the distance grows with c)."""
    view = (-1, *[1] * (x.dim() - 1))
    lo = torch.zeros(len(x), device=x.device)
    hi = torch.ones(len(x), device=x.device)
    for _ in range(60):       # grow hi until it reaches the radius (a row that cannot stays at its largest step)
        short = distance((x + hi.view(view) * delta).clamp(*box), x, norm) < radius
        if not short.any():
            break
        hi = torch.where(short, hi * 2, hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        short = distance((x + mid.view(view) * delta).clamp(*box), x, norm) < radius
        lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
    return (x + hi.view(view) * delta).clamp(*box)


def _inner(x: torch.Tensor, k: int, eps: float, norm: str, box: Box, gen: torch.Generator) -> torch.Tensor:
    """k random points within eps of each image (N, k, ...): uniform in the L-inf cube, or uniform in the L2 ball."""
    xs = x.unsqueeze(1).expand(-1, k, *x.shape[1:])
    if norm == "linf":
        delta = (torch.rand(xs.shape, generator=gen) * 2 - 1).to(x.device) * eps
    else:
        d = torch.randn(xs.shape, generator=gen).to(x.device)
        d = d / d.flatten(2).norm(dim=2).view(*d.shape[:2], *[1] * (x.dim() - 1))
        r = torch.rand(d.shape[:2], generator=gen).to(x.device) ** (1 / x[0].numel())
        delta = d * (eps * r).view(*d.shape[:2], *[1] * (x.dim() - 1))
    return (xs + delta).clamp(*box)


def _surface(x: torch.Tensor, k: int, radius: float, norm: str, box: Box, gen: torch.Generator,
             pixels: int = 0) -> torch.Tensor:
    """k random points at exactly `radius` from each image, after clipping to the box (N, k, ...). `pixels` > 0:
    sparse points, each moving only that many random pixels, toward the inside of the box (so that the radius
    is reached)."""
    xs = x.unsqueeze(1).expand(-1, k, *x.shape[1:]).reshape(-1, *x.shape[1:])
    delta = (torch.rand(xs.shape, generator=gen) * 2 - 1 if norm == "linf" else
             torch.randn(xs.shape, generator=gen)).to(x.device)
    if pixels:
        flat = xs.flatten(1)
        keep = torch.rand(flat.shape, generator=gen).to(x.device).argsort(1)[:, :pixels]
        mask = torch.zeros_like(flat).scatter_(1, keep, 1.0)
        inward = torch.where(flat < (box[0] + box[1]) / 2, 1.0, -1.0)
        delta = (delta.flatten(1).abs() * inward * mask).view_as(xs)
    r = torch.full((len(xs),), radius, device=x.device)
    return _to_radius(xs, delta, r, norm, box).view(len(x), k, *x.shape[1:])


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 1000) -> torch.Tensor:
    """fn over x in batches of `size` (bounded memory for the tens of thousands of points), concatenated."""
    return torch.cat([fn(x[i:i + size]) for i in range(0, len(x), size)])


def _features(features: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """(N, P, ...) points -> (N, P, d) features."""
    return _batched(features, points.reshape(-1, *points.shape[2:])).view(*points.shape[:2], -1)


def fit_readouts(feats: torch.Tensor, labels: torch.Tensor, closeness: float = 0.0, steps: int = 3000,
                 lr: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One logistic regression per image on its points' features (N, P, d) and labels (P,) in {0, 1}, all fitted
    together (Adam on standardized features). Returns weight (N, d) and bias (N) in the original feature scale,
    rescaled so that the largest |logit| over each image's points is 1 (the authors' "fixed" rescaling), and
    which images are separated exactly (the test's precondition; the others are set aside).

    `closeness` c moves the boundary toward class 1 by c times the largest class-1 logit (the authors'
    `decision_boundary_closeness`, 0.9999 for classifiers): then only the most confident boundary point stays in
    class 1, just, so the example that must exist is one point's neighbourhood, not the whole surface."""
    mean = feats.mean(1, keepdim=True)
    scale = feats.std(1, keepdim=True).mean(2, keepdim=True).clamp_min(1e-8)
    z = (feats - mean) / scale
    sign = labels.float() * 2 - 1
    w = torch.zeros(feats.shape[0], feats.shape[2], requires_grad=True)
    b = torch.zeros(feats.shape[0], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for step in range(steps):
            s = torch.einsum("npd,nd->np", z, w) + b[:, None]
            if step % 100 == 0 and bool((s * sign > 0).all()):
                break
            opt.zero_grad()
            F.softplus(-sign * s).mean(1).sum().backward()
            opt.step()
    w, b = w.detach(), b.detach()
    weight = w / scale.squeeze(2)
    bias = b - (weight * mean.squeeze(1)).sum(1)
    s = torch.einsum("npd,nd->np", feats, weight) + bias[:, None]
    separated = (s * sign > 0).all(1)
    bias = bias - closeness * s.amax(1).clamp_min(0)
    s = torch.einsum("npd,nd->np", feats, weight) + bias[:, None]
    top = s.abs().amax(1).clamp_min(1e-12)
    return weight / top[:, None], bias / top, separated


@dataclass
class Setup:
    """The binarized defense: the modules each attack may aim at ("classifier", "joint", "pipeline",
    "unrolled"), the one whose label-1 judges success, and the images whose readout separated exactly."""

    views: dict[str, nn.Module]
    judge: nn.Module
    usable: torch.Tensor
    random_success: torch.Tensor


# per policy: the authors' settings for classifiers (999 inner points, 1 boundary point, the readout's boundary
# 0.9999 of the way to it) and for detectors (their case study: 10 inner points, 49 boundary points, one far-off)
DEFAULTS = {"classifier": {"n_inner": 999, "n_boundary": 1, "far_off": 0.0, "closeness": 0.9999},
            "revise": {"n_inner": 999, "n_boundary": 1, "far_off": 0.0, "closeness": 0.9999},
            "reject": {"n_inner": 10, "n_boundary": 49, "far_off": 1.75, "closeness": 0.0}}
SPARSE = (1, 2, 4, 8, 16, 32, 64)     # pixels moved by the candidate surface points a guardian may accept


def binarize(policy: str, master: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf",
             guardian: nn.Module | None = None, threshold: float = 0.5, inverted: bool = False,
             n_inner: int | None = None, n_boundary: int | None = None, far_off: float | None = None,
             closeness: float | None = None, gap: float = 0.05, n_random: int = 100, box: Box = BOX,
             seed: int = 0, modifier: dict | None = None) -> Setup:
    """Build the binary task around each image of x and the binarized defense (module docstring). Settings left
    None take the policy's DEFAULTS; `gap`: inner points lie within (1 - gap) eps; `n_random`: fresh random
    surface points per image, to count the images a random search would already break. `modifier`: ReabsNet's
    settings other than the threshold (revise_to, overshoot, max_iter, norm, extra_steps; default the paper's).

    The reject policy's accepted boundary point: the authors draw random surface points until the detector
    accepts one; this guardian flags every dense random point at L-inf 0.3 (it was trained on perturbed digits),
    so candidates also include sparse surface points (SPARSE pixels moved), and the densest accepted one is used.
    """
    _refuse(policy, guardian, inverted, norm, x, eps)
    chosen = {"n_inner": n_inner, "n_boundary": n_boundary, "far_off": far_off, "closeness": closeness}
    cfg = {k: DEFAULTS[policy][k] if v is None else v for k, v in chosen.items()}
    gen = torch.Generator().manual_seed(seed)
    accepted = (Inverted(guardian) if inverted else guardian) if guardian is not None else None
    inner = torch.cat([x.unsqueeze(1), _inner(x, cfg["n_inner"], (1 - gap) * eps, norm, box, gen)], 1)
    if policy == "reject":
        boundary, valid = _reject_boundary(master, accepted, x, cfg["n_boundary"], eps, norm, threshold, inverted,
                                           box, seed, gen)
    else:
        boundary = _surface(x, cfg["n_boundary"], eps, norm, box, gen)
        valid = torch.ones(len(x), dtype=torch.bool, device=x.device)
    parts = [inner, boundary] + ([_surface(x, 1, cfg["far_off"] * eps, norm, box, gen)] if cfg["far_off"] else [])
    points = torch.cat(parts, 1)
    labels = torch.cat([torch.zeros(inner.shape[1]), torch.ones(points.shape[1] - inner.shape[1])]).long()

    features: nn.Module = Penultimate(master)
    if policy == "revise":
        features = ReabsNet(features, guardian, threshold=threshold, box=box, **(modifier or {})).eval()
    weight, bias, separated = fit_readouts(_features(features, points).cpu(), labels, cfg["closeness"])
    weight, bias = weight.to(x.device), bias.to(x.device)
    head = Binarized(features, weight, bias, x, norm).eval()
    views, judge = _views(policy, head, master, guardian, accepted, weight, bias, x, norm, threshold, box, modifier)

    def wins(candidates: torch.Tensor) -> torch.Tensor:
        won = _batched(lambda v: judge(v).argmax(1) == 1, candidates.reshape(-1, *x.shape[1:]))
        return won.view(len(x), -1).any(1)

    # the existence guarantee, checked on the judge itself: some class-1 training point within eps wins
    usable = separated.to(x.device) & valid & wins(boundary)
    return Setup(views=views, judge=judge, usable=usable,
                 random_success=wins(_surface(x, n_random, eps, norm, box, gen)) & usable)


def _refuse(policy: str, guardian, inverted: bool, norm: str, x: torch.Tensor, eps: float) -> None:
    """`binarize`'s arguments, each refused in one line where they cannot make a test."""
    if policy not in DEFAULTS:
        raise ReabsnetError(f"policy {policy!r}: choose {', '.join(DEFAULTS)}")
    if policy != "classifier" and guardian is None:
        raise ReabsnetError(f"policy {policy}: needs a guardian")
    if inverted and policy != "reject":
        raise ReabsnetError("the inverted test applies to the reject policy")
    if norm not in ("linf", "l2"):
        raise ReabsnetError(f"norm {norm!r}: choose linf or l2")
    if len(x) > 1:
        p = float("inf") if norm == "linf" else 2.0
        gaps = torch.cdist(x.flatten(1), x.flatten(1), p=p) + torch.eye(len(x), device=x.device) * 1e9
        if gaps.min() <= 2 * eps:
            raise ReabsnetError(f"two test images lie within {2 * eps:g} of each other ({norm}): their balls "
                                "overlap; test them in separate calls")


def _reject_boundary(master: nn.Module, accepted: nn.Module, x: torch.Tensor, n_boundary: int, eps: float,
                     norm: str, threshold: float, inverted: bool, box: Box, seed: int, gen: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reject policy's class-1 points and the images whose task can be built: the master's PGD examples moved
    onto the surface (the normal test: n_boundary - 1 of them and one surface point the guardian accepts; the
    inverted test: one, which the guardian flags, among random ones)."""
    def passes(points: torch.Tensor) -> torch.Tensor:
        """(N, k, ...) -> (N, k): the guardian (inverted or not) accepts the point."""
        p = _batched(lambda v: accepted(v).softmax(1)[:, 1], points.reshape(-1, *points.shape[2:]))
        return (p <= threshold).view(points.shape[:2])

    k_adv = 1 if inverted else n_boundary - 1
    xs = x.unsqueeze(1).expand(-1, k_adv, *x.shape[1:]).reshape(-1, *x.shape[1:])
    with torch.no_grad():
        y_master = master(x).argmax(1).repeat_interleave(k_adv)
    adv = pgd(master, xs, y_master, eps=eps, norm=norm, step_size=eps / 4, steps=10, loss="margin",
              early_stop=False, seed=seed, box=box).x_adv
    adv = _to_radius(xs, adv - xs, torch.full((len(xs),), eps, device=x.device), norm, box)
    adv = adv.view(len(x), k_adv, *x.shape[1:])
    if inverted:
        return torch.cat([adv, _surface(x, n_boundary - 1, eps, norm, box, gen)], 1), passes(adv)[:, 0]
    pool = torch.cat([_surface(x, 10, eps, norm, box, gen)]
                     + [_surface(x, 10, eps, norm, box, gen, pixels=k) for k in reversed(SPARSE)], 1)
    ok = passes(pool)
    rows = torch.arange(len(x), device=x.device)
    return torch.cat([adv, pool[rows, ok.float().argmax(1)].unsqueeze(1)], 1), ok.any(1)   # the densest accepted


def _views(policy: str, head: nn.Module, master: nn.Module, guardian, accepted, weight, bias, x: torch.Tensor,
           norm: str, threshold: float, box: Box, modifier: dict | None) -> tuple[dict[str, nn.Module], nn.Module]:
    """The binarized defense as each attack of the policy sees it, and the judge of success."""
    if policy == "classifier":
        return {"classifier": head}, head
    if policy == "reject":
        joint = JointLogits(head, accepted, threshold).eval()
        return {"joint": joint}, joint
    views = {"pipeline": head, "joint": JointLogits(Binarized(Penultimate(master), weight, bias, x, norm),
                                                    guardian, threshold).eval()}
    settings = modifier or {}
    if settings.get("norm", "l2") == "l2" and not settings.get("extra_steps"):   # unrolling: the paper's step
        unrolled = ReabsNet(Penultimate(master), guardian, threshold=threshold, box=box, backward="unrolled",
                            **settings).eval()
        views["unrolled"] = Binarized(unrolled, weight, bias, x, norm).eval()
    return views, head


Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# each policy's test runs these steps of the suite (security.suite), under the names its reports give them; on a
# two-class readout (three classes with the joint model's "rejected") DLR is undefined, so every APGD runs on
# cross-entropy
BINARIZED = {"classifier": {"APGD-CE": "baseline-apgd-ce", "Square": "baseline-square"},
             "reject": {"joint APGD-CE": "joint-apgd-ce", "joint Square": "joint-square",
                        "Orthogonal PGD": "joint-orthogonal-pgd"},
             "revise": {"BPDA APGD-CE": "bpda-apgd-ce", "unrolled APGD-CE": "unrolled-apgd-dlr",
                        "joint APGD-CE": "joint-apgd-ce"}}
# the suite's networks, as the binarized defense offers them
VIEWS = {"baseline": "classifier", "baseline-ce": "classifier", "joint": "joint", "joint-ce": "joint",
         "bpda": "pipeline", "bpda-ce": "pipeline", "unrolled": "unrolled"}
SEEDED = ("apgd", "square")       # the attacks with a random start or random squares


def suite_attacks(policy: str, eps: float, norm: str = "linf", steps: int = 100, queries: int = 5000,
                  seed: int = 0) -> dict[str, tuple[str, Attack]]:
    """The suite's steps each policy's test runs (BINARIZED), by name -> (the view they attack, the attack): each
    step's own attack function with its budget at `steps` and `queries` (one restart), cross-entropy for APGD."""
    budget = Budget(steps=steps, restarts=1, queries=queries, pipeline_queries=queries)
    suite = Suite.standard()
    out = {}
    for name, step_name in BINARIZED[policy].items():
        step = suite.only(step_name).steps[0]
        settings = {**step.resolved(budget), "eps": eps, "norm": norm,
                    **({"loss": "ce"} if step.attack == "apgd" else {}),
                    **({"reject": 2} if step.network in REJECTING else {}),
                    **({"seed": seed} if step.attack in SEEDED else {})}
        out[name] = (VIEWS[step.network], _attack(get_attack(step.attack), settings))
    return out


def _attack(attack: Callable, settings: dict) -> Attack:
    return lambda m, x, y: attack(m, x, y, **settings).x_adv


def binarization_test(setup: Setup, x: torch.Tensor, attacks: dict[str, tuple[str, Attack]], eps: float,
                      norm: str = "linf", box: Box = BOX) -> dict[str, dict]:
    """Run each attack, unchanged, on its view of the binarized defense from the test images (class 0), and judge
    success on `setup.judge`: class 1 (accepted, where there is a guardian) within eps. Returns, per attack, the
    attack success rate over the usable images with its Wilson interval and PASS_RATE verdict, and the same for
    "any attack" (an image counts where some attack found its example: the suite's worst case per image)."""
    idx = setup.usable.nonzero().squeeze(1)
    out = {}
    found = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
    for name, (view, attack) in attacks.items():
        model = setup.views[view]
        x0 = x[idx]
        y0 = torch.zeros(len(idx), dtype=torch.long, device=x.device)
        with frozen(model):
            x_adv = attack(model, x0, y0).detach().clamp(*box) if len(idx) else x0
        inside = distance(x_adv, x0, norm) <= eps * (1 + 1e-4) + 1e-6
        label = _batched(lambda v: setup.judge(v).argmax(1), x_adv) if len(x_adv) else y0
        hit = (label == 1) & inside
        found |= hit
        out[name] = _verdict(int(hit.sum()), len(idx), view)
    out["any attack"] = _verdict(int(found.sum()), len(idx), "worst case per image")
    return out


def _verdict(won: int, n: int, view: str) -> dict:
    low, high = wilson(won, n)
    return {"view": view, "success": won, "n": n, "rate": won / n if n else None, "low": low, "high": high,
            "passes": bool(n and won / n >= PASS_RATE)}


def summary(setup: Setup, results: dict[str, dict]) -> dict:
    """The test's record: images tested, those whose task could not be built, random points' success."""
    return {"images": len(setup.usable), "usable": int(setup.usable.sum()),
            "random_success": int(setup.random_success.sum()), "attacks": results, "pass_rate": PASS_RATE}


def well_apart(x: torch.Tensor, eps: float, norm: str, n: int) -> torch.Tensor:
    """Indices of up to n images of x, in order, whose eps-balls are pairwise disjoint (an image within 2 eps of
    one already taken is skipped), so that one `Binarized` module can hold all their readouts."""
    p = float("inf") if norm == "linf" else 2.0
    flat = x.flatten(1)
    taken: list[int] = []
    for j in range(len(x)):
        if len(taken) >= n:
            break
        if not taken or bool((torch.cdist(flat[j:j + 1], flat[taken], p=p) > 2 * eps).all()):
            taken.append(j)
    return torch.tensor(taken, dtype=torch.long)


def run_tests(master: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf",
              guardian: nn.Module | None = None, policies: tuple[str, ...] = ("classifier",), threshold: float = 0.5,
              steps: int = 100, queries: int = 5000, box: Box = BOX, seed: int = 0, modifier: dict | None = None
              ) -> dict[str, dict]:
    """The binarization test of each policy ("classifier", "reject", "reject-inverted", "revise") at one bound,
    with the suite's main attacks (`suite_attacks`) at the given budget, on the images x. Returns per policy the
    `summary` record (each attack's rate and verdict, and "any attack")."""
    out = {}
    for policy in policies:
        kind, inverted = ("reject", True) if policy == "reject-inverted" else (policy, False)
        setup = binarize(kind, master, x, eps=eps, norm=norm, guardian=guardian, threshold=threshold,
                         inverted=inverted, box=box, seed=seed, modifier=modifier)
        attacks = {name: a for name, a in suite_attacks(kind, eps, norm, steps=steps, queries=queries,
                                                        seed=seed).items() if a[0] in setup.views}
        results = binarization_test(setup, x, attacks, eps, norm, box)
        out[policy] = summary(setup, results)
    return out


def binarization_tests(defense: ReabsNet | None, classifiers: dict[str, nn.Module], x: torch.Tensor,
                       bounds: list[tuple[str, float]], count: int, steps: int, queries: int, box: Box) -> dict:
    """The binarization test at each bound of an adaptive evaluation, on the first `count` images of x whose balls
    are disjoint: on the defense the reject policy (and its inverted control) and ReabsNet; on each plain network
    of `classifiers` (by its report name) the classifier test."""
    out = {}
    for norm, eps in bounds:
        idx = well_apart(x, eps, norm, count)
        some = defense.master if defense is not None else next(iter(classifiers.values()))
        xs = x[idx].to(next(some.parameters()).device)
        tests = {}
        budget = {"eps": eps, "norm": norm, "steps": steps, "queries": queries, "box": box}
        if defense is not None:
            d = defense
            modifier = {"revise_to": d.revise_to, "overshoot": d.overshoot, "max_iter": d.max_iter, "norm": d.norm,
                        "extra_steps": d.extra_steps}
            tests["ReabsNet"] = run_tests(d.master, xs, guardian=d.guardian, threshold=d.threshold,
                                          policies=("reject", "reject-inverted", "revise"), modifier=modifier,
                                          **budget)
        for name, net in classifiers.items():
            tests[name] = run_tests(net, xs, **budget)
        out[f"{norm} {eps:g}"] = {"images": len(idx), "tests": tests}
    return out
