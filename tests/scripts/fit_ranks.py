"""Train a small dropout-free network with `fit` for one epoch and save its weights (run under torchrun or alone):
data-parallel training must give the single process's weights (up to float rounding)."""

import sys

import torch
import torch.nn as nn

from reabsnet import distributed
from reabsnet.profiles import TrainConfig
from reabsnet.runtime import seed_everything
from reabsnet.train.loop import cross_entropy_at, fit

distributed.init(torch.device("cpu"))
torch.set_num_threads(1)
gen = seed_everything(0)
x = torch.randn(600, 1, 8, 8, generator=torch.Generator().manual_seed(1))
y = (x.flatten(1)[:, :5].sum(1) > 0).long() + 2 * (x.flatten(1)[:, 5:10].sum(1) > 0).long()
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4))
cfg = TrainConfig(epochs=2, batch_size=50, lr=0.05)   # every batch splits evenly over 2 ranks
history = fit(model, (x, y), (x[:100], y[:100]), cfg, loss_fn=cross_entropy_at(1.0), generator=gen)
if distributed.is_main():
    torch.save({"state": model.state_dict(), "loss": history.train_loss, "ranks": distributed.size()}, sys.argv[1])
distributed.shutdown()
distributed.leave(0)
