"""Training: the generic loop and the stages built on it."""

from reabsnet.train.loop import History, accuracy, cross_entropy_at, fit, predict_logits
from reabsnet.train.madry import train_madry
from reabsnet.train.master import train_master

__all__ = ["History", "accuracy", "cross_entropy_at", "fit", "predict_logits", "train_madry", "train_master"]
