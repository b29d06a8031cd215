"""reabsnet: ReabsNet (Chen et al. 2017), a guardian network that detects adversarial examples and a modifier
that revises them before the master network classifies them."""

__version__ = "0.1.0"
