"""reabsnet: ReabsNet (Chen, Meng, Sun, Tang and Zhu 2017, arXiv:1712.08250), a guardian network that detects
adversarial examples and a modifier that revises them before the master network classifies them.

    net = reabsnet.load_pretrained("mnist-paper")    # the paper's networks, SHA-256 verified
    net.predict(x).label                              # x: (N, 1, 28, 28) in [-0.5, 0.5]
"""

__version__ = "0.1.0"

# the public entry points, imported on first use so that `import reabsnet` (and the CLI's start) stays light
_LAZY = {"load_pretrained": "reabsnet.pretrained", "pretrained_names": "reabsnet.pretrained",
         "ReabsNet": "reabsnet.defense", "fit_guardian": "reabsnet.train.guardian",
         "evaluate_oblivious": "reabsnet.evaluation.any_model", "evaluate_adaptive": "reabsnet.security.api",
         "Suite": "reabsnet.security.suite", "Step": "reabsnet.security.suite",
         "Budget": "reabsnet.security.suite",
         "load_npz": "reabsnet.data.user", "load_image_folder": "reabsnet.data.user",
         "synthetic": "reabsnet.data.synthetic"}

__all__ = ["Budget", "ReabsNet", "Step", "Suite", "__version__", "evaluate_adaptive", "evaluate_oblivious",
           "fit_guardian", "load_image_folder",
           "load_npz", "load_pretrained", "pretrained_names", "synthetic"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reabsnet' has no attribute {name!r}")
