"""Low-precision search passes: every success judged in float32, and the wrapped network's mode left alone."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks import LowPrecision, apgd, frozen, full_precision, square
from reabsnet.attacks.common import confirmed


class Rounding(nn.Linear):
    """Three logits of flattened 1x2x2 inputs, (1000, 999.75 + x0, -1000): in float32 class 1 wins exactly when
    x0 > 0.25, but a bfloat16 matmul (8 bits of mantissa: steps of 4 near 1000) rounds 999.75 + x0 to 1000 for any
    x0 in (-1.75, 2.25), a tie the argmax gives to class 0. A low-precision pass sees another boundary than the
    float32 judge."""

    def __init__(self):
        super().__init__(4, 3)
        with torch.no_grad():
            self.weight.zero_()
            self.weight[1, 0] = 1.0
            self.bias.copy_(torch.tensor([1000.0, 999.75, -1000.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def test_low_precision_really_is_low_and_confirmation_is_not():
    net = Rounding()
    x = torch.full((1, 1, 2, 2), 0.4)
    low = LowPrecision(net)
    assert int(net(x).argmax(1)) == 1 and int(low(x).argmax(1)) == 0     # bf16 misses what float32 sees
    assert full_precision(low) is net and full_precision(net) is net
    claimed = torch.tensor([True])
    logits = torch.tensor([[0.0, 0.0, 1.0]])                               # a low-precision pass claims class 2
    assert int(confirmed(low, x, logits, claimed).argmax(1)) == 1          # float32 says class 1
    assert torch.equal(confirmed(net, x, logits, claimed), logits)        # full precision: kept as it is


def test_attacks_on_a_low_precision_network_confirm_and_judge_in_float32():
    # label 1 at x0 = 0.3: bf16 calls it class 0 (a success) from the start, float32 class 1. An attack that took
    # bf16's word would stop there and fail the float32 judge; confirmed, it goes on and moves x0 below 0.25
    x, y = torch.full((3, 1, 2, 2), 0.3), torch.ones(3, dtype=torch.long)
    for attack in (lambda m: apgd(m, x, y, eps=0.1, loss="ce", steps=10, box=(-1.0, 1.0)),
                   lambda m: square(m, x, y, eps=0.1, queries=50, box=(-1.0, 1.0))):
        r = attack(LowPrecision(Rounding()))
        assert r.success.all() and (r.label == 0).all()
        with torch.no_grad():
            assert (Rounding()(r.x_adv).argmax(1) == 0).all()
    # within 0.01 nothing breaks it in float32, though a bf16 judge would count every example
    r = apgd(LowPrecision(Rounding()), x, y, eps=0.01, loss="ce", steps=5, box=(-1.0, 1.0))
    assert not r.success.any() and (r.label == 1).all()


def test_frozen_leaves_the_wrapped_network_in_its_mode():
    # a new module is in training mode; a wrapper that did not take the network's mode would put the network (its
    # dropout) into training mode when `frozen` restored the wrapper's
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Dropout(0.5)).eval()
    with frozen(LowPrecision(net)):
        pass
    assert not net.training
