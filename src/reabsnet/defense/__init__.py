"""The defense: the modifier and the ReabsNet module that composes guardian, modifier and master."""

from reabsnet.defense.modifier import ADVERSARIAL, NATURAL, Revision, revise
from reabsnet.defense.reabsnet import Prediction, ReabsNet

__all__ = ["ADVERSARIAL", "NATURAL", "Prediction", "ReabsNet", "Revision", "revise"]
