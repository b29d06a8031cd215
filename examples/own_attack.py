"""Your own attack in the adaptive suite, counted in the worst case beside the suite's: here a "brightness" attack
on the shipped paper networks (every pixel of the digit pushed to the bound's edge, then the master's label
checked), added after joint APGD-CE, with the suite cut down to a few steps so it runs in seconds.

    python examples/own_attack.py            # MNIST's first 20 test images, L-inf 0.3, budget "smoke"

An attack has the package's one call shape, `attack(model, x, y, *, target=None, eps, norm, box, **settings)`, and
returns an `AttackResult` or just the adversarial batch (the engine judges it); `model` is the network its step
names (here "joint": master and guardian as one, class N meaning "rejected"). A step whose examples leave the
bound or the box is refused with one line naming it, and nothing is written.
"""

import torch

import reabsnet
from reabsnet import data
from reabsnet.rates import cell
from reabsnet.security.suite import BOTH


def brighten(model, x, y, *, target=None, eps, norm, box, **settings):
    """Every pixel moved by eps toward the box's top (L-inf): a blunt attack, kept where it fools the model."""
    return (x + eps).clamp(*box)


def evaluate(n: int = 20, home=None):
    net = reabsnet.load_pretrained("mnist-paper")
    x, y = data.load("mnist", home=home).split("test", n)
    suite = (reabsnet.Suite.standard()
             .only("joint-apgd-ce", "joint-square", "baseline-apgd-ce")
             .add(reabsnet.Step("brighten", brighten, "joint", BOTH), after="joint-apgd-ce"))
    return reabsnet.evaluate_adaptive(net.master, net.guardian, x, y, bounds=[0.3], budget="smoke",
                                      temperature=100, suite=suite, sanity=False)


if __name__ == "__main__":
    torch.manual_seed(0)
    result = evaluate()
    bound = result.results["bounds"]["linf 0.3"]
    for key, row in bound["per_attack"].items():
        # every-image steps give the accuracy left; survivor steps how many standing images they attacked and broke
        print(f"{key}: " + (f"on {row['attacked']} standing, broke {row['broke']}" if "attacked" in row
                            else f"accuracy {cell(row.get('reabsnet') or row.get('master'))}"))
    print("robust accuracy (ReabsNet, worst case):", result.robust_accuracy())
    print("broken by, per image:", result.broken_by("linf 0.3"))
