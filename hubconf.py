"""torch.hub entry points: the paper's networks as this repository ships them, SHA-256 verified.

    net = torch.hub.load("<a clone of this repository>", "reabsnet_mnist", source="local")
    baseline = torch.hub.load("<a clone of this repository>", "madry_mnist", source="local")

Inputs are MNIST images (N, 1, 28, 28) in [-0.5, 0.5].
"""

import sys
from pathlib import Path

dependencies = ["torch", "numpy", "safetensors"]

try:
    import reabsnet
except ImportError:            # a clone without `pip install`: the package is under src/
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import reabsnet


def reabsnet_mnist(pretrained: bool = True, device: str = "cpu"):
    """The paper's ReabsNet on MNIST (Chen et al. 2017): the distilled master (T=100), the guardian and the
    modifier (two-class DeepFool toward natural, threshold 0.5), in eval mode; the networks of the committed paper
    report. `net(x)` gives the master's logits on the revised input, `net.predict(x)` the full record (label,
    flagged, P(adversarial), the revision). `pretrained` must be True: only the trained networks ship."""
    if not pretrained:
        raise ValueError("reabsnet_mnist: only the trained networks ship; pretrained must be True")
    return reabsnet.load_pretrained("mnist-paper", device=device)


def madry_mnist(pretrained: bool = True, device: str = "cpu"):
    """The Madry-style baseline of the paper's Table 3: the MNIST challenge network adversarially trained at L-inf
    0.3 (our training; `reabsnet` reports its recipe), in eval mode, returning logits. `pretrained` must be True."""
    if not pretrained:
        raise ValueError("madry_mnist: only the trained network ships; pretrained must be True")
    return reabsnet.load_pretrained("mnist-paper-madry", device=device)
