"""Adaptive attacks: APGD, the joint master+guardian network, and the BPDA attack through the modifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reabsnet.attacks import JointLogits, Scaled, apgd, pgd
from reabsnet.attacks.adaptive import _checkpoints, outcome_loss
from reabsnet.defense import ReabsNet


@pytest.fixture(scope="module")
def batch(mnist):
    x, y = mnist.split("test")
    return x[:64], y[:64]


def _toy_guardian(flag_bright: bool = True) -> nn.Module:
    """A fixed two-class net: "adversarial" when the mean pixel is above -0.33 (most MNIST digits are below)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1].fill_(40.0 / 784)
        net[1].weight[0].fill_(-40.0 / 784)
        net[1].bias.copy_(torch.tensor([-0.33 * 40, 0.33 * 40]) * (1 if flag_bright else -1))
    return net.eval()


def test_checkpoints_follow_croce_and_hein():
    assert _checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]   # auto-attack's schedule for 100 steps


def test_joint_logits_reject_exactly_when_the_guardian_flags(small_model, batch):
    x, _ = batch
    guardian = _toy_guardian()
    x = torch.cat([x, x.clamp(min=0.0)])               # half of them brightened into "adversarial"
    for threshold in (0.3, 0.5, 0.8):
        joint = JointLogits(small_model, guardian, threshold).eval()
        with torch.no_grad():
            label = joint(x).argmax(1)
            flagged = guardian(x).softmax(1)[:, 1] > threshold
            master = small_model(x).argmax(1)
        assert flagged.any() and (~flagged).any()
        assert torch.equal(label == 10, flagged)
        assert torch.equal(label[~flagged], master[~flagged])


def test_dlr_with_a_reject_class_keeps_a_gradient_when_y_and_reject_lead():
    logits = torch.tensor([[9.0, 1.0, 0.5, 0.0, 8.0]], requires_grad=True)   # y = 0, reject = 4 second
    value = outcome_loss(logits, torch.tensor([0]), "dlr", reject=4)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert grad.abs().sum() > 0
    # and the set cross-entropy is -log P(y or reject)
    ce = outcome_loss(logits.detach(), torch.tensor([0]), "ce", reject=4)
    p = logits.detach().softmax(1)[0]
    assert torch.allclose(ce, -torch.log(p[0] + p[4]).view(1), atol=1e-5)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_apgd_stays_in_the_ball_and_box_and_matches_pgd(small_model, batch, norm, eps):
    x, y = batch
    res = apgd(small_model, x, y, eps=eps, norm=norm, loss="dlr", steps=30)
    assert res.x_adv.min() >= -0.5 and res.x_adv.max() <= 0.5
    assert ((res.linf if norm == "linf" else res.l2) <= eps + 1e-4).all()
    with torch.no_grad():
        assert torch.equal(res.success, small_model(res.x_adv).argmax(1) != y)
    ref = pgd(small_model, x, y, eps=eps, norm=norm, steps=30, step_size=2.5 * eps / 30, loss="margin")
    assert res.success.float().mean() >= ref.success.float().mean() - 2 / len(y)


def test_apgd_is_deterministic_for_a_seed(small_model, batch):
    x, y = batch
    a, b = (apgd(small_model, x, y, eps=0.1, steps=10, seed=3) for _ in range(2))
    assert torch.equal(a.x_adv, b.x_adv)


def test_joint_attack_evades_the_guardian_and_never_counts_rejection_as_success(small_model, batch):
    x, y = batch
    guardian = _toy_guardian()
    joint = JointLogits(small_model, guardian).eval()
    res = apgd(joint, x, y, eps=0.3, loss="ce", steps=30, reject=10)
    with torch.no_grad():
        flagged = guardian(res.x_adv).softmax(1)[:, 1] > 0.5
        master = small_model(res.x_adv).argmax(1)
    assert res.success.float().mean() > 0.5
    assert not flagged[res.success].any()                       # successes pass the guardian ...
    assert (master[res.success] != y[res.success]).all()        # ... and fool the master
    assert torch.equal(res.success, ~flagged & (master != y))


def test_bpda_attack_on_the_pipeline_beats_the_oblivious_attack(small_model, batch):
    """A guardian that flags almost everything the attack produces: the pipeline's revision then decides; the BPDA
    attack, which sees the pipeline, must do at least as well as PGD crafted on the master alone."""
    x, y = batch
    net = ReabsNet(small_model, _toy_guardian(), max_iter=10).eval()
    oblivious = pgd(small_model, x, y, eps=0.2, steps=20, step_size=0.025, loss="margin").x_adv
    with torch.no_grad():
        transfer_wrong = (net(oblivious).argmax(1) != y).float().mean()
    res = apgd(net, x, y, eps=0.2, loss="dlr", steps=20)
    assert res.success.float().mean() >= transfer_wrong - 2 / len(y)
    assert res.success.float().mean() > 0.3


def test_scaled_keeps_labels(small_model, batch):
    x, _ = batch
    with torch.no_grad():
        assert torch.equal(Scaled(small_model, 0.01)(x).argmax(1), small_model(x).argmax(1))


def test_apgd_settings_parse_from_the_command_line():
    from reabsnet.attacks.settings import parse_settings
    from reabsnet.errors import ReabsnetError

    assert parse_settings(apgd, ["reject=10", "loss=ce", "eps=0.1", "norm=l2"]) == {
        "reject": 10, "loss": "ce", "eps": 0.1, "norm": "l2"}
    assert parse_settings(apgd, ["reject=none"]) == {"reject": None}
    with pytest.raises(ReabsnetError, match="not a valid number"):
        parse_settings(apgd, ["reject=x"])
    with pytest.raises(ReabsnetError, match="expected KEY=VALUE"):
        parse_settings(apgd, ["trace=1"])


def test_apgd_trace_shows_the_loss_going_up(small_model, batch):
    x, y = batch
    trace: list[float] = []
    apgd(small_model, x, y, eps=0.1, loss="ce", steps=20, trace=trace)
    assert len(trace) >= 1 and trace[-1] > 0
    assert all(b >= a - 1e-6 for a, b in zip(trace, trace[1:], strict=False))   # best-so-far gains never fall


def test_joint_pgd_stays_in_the_ball_and_its_examples_teach_a_guardian_to_flag_them(small_model, batch):
    from reabsnet.models import create_model
    from reabsnet.train.hardened import joint_pgd, validation_score

    x, y = (t[:32] for t in batch)
    torch.manual_seed(0)
    guardian = create_model("guardian").eval()
    gen = torch.Generator().manual_seed(0)
    x_adv = joint_pgd(small_model, guardian, x, y, eps=0.3, steps=5, threshold=0.5, gen=gen)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= -0.5 and x_adv.max() <= 0.5
    assert all(p.grad is None for p in guardian.parameters())       # input gradients only
    # against the master alone the joint attack fools it (an untrained guardian flags nothing, or everything)
    before = validation_score(small_model, guardian, x, y, eps=0.3, steps=10, threshold=0.5, seed=1)
    assert set(before) == {"clean_rejected", "clean_correct", "correct_or_rejected", "images"}
    # a few steps of the hardening loss (natural vs joint PGD) make the guardian reject the attacked inputs
    opt = torch.optim.Adam(guardian.parameters(), lr=1e-3)
    for _ in range(30):
        guardian.eval()
        x_adv = joint_pgd(small_model, guardian, x, y, eps=0.3, steps=5, threshold=0.5, gen=gen)
        guardian.train()
        logits = guardian(torch.cat([x, x_adv]))
        loss = nn.functional.cross_entropy(logits, torch.cat([torch.zeros(len(x)), torch.ones(len(x))]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    guardian.eval()
    after = validation_score(small_model, guardian, x, y, eps=0.3, steps=10, threshold=0.5, seed=1)
    assert after["correct_or_rejected"] > before["correct_or_rejected"] + 0.3
    assert after["clean_rejected"] <= 0.1


def test_the_transfer_check_holds_where_the_counts_are_equal():
    # the accuracy-vs-bound curve stores float32 means: 7 of 10 reads 0.69999999, the adaptive rate 0.7
    import torch

    from reabsnet.security.sanity import transfer_check

    results = {"bounds": {"linf 0.1": {"norm": "linf", "eps": 0.1, "reabsnet": {"rate": 0.7}}}}
    assert transfer_check(results, {0.1: float(torch.tensor([1.0] * 7 + [0.0] * 3).mean())})["holds"]
    assert not transfer_check(results, {0.1: 0.6})["holds"]


def test_the_reject_policy_at_a_threshold_counts_a_rejected_clean_input_as_an_error():
    import torch

    from reabsnet.security.thresholds import at_thresholds

    y = torch.tensor([0, 0, 0, 0])
    p_clean = torch.tensor([0.1, 0.9, 0.1, 0.1])           # image 1 is rejected clean
    clean_correct = torch.tensor([True, True, True, False])  # image 3 is wrong clean
    # one attack set: image 0 fooled with P(adversarial) 0.3, image 2 fooled but flagged (0.8)
    seen = [(torch.tensor([0.3, 0.9, 0.8, 0.1]), torch.tensor([1, 0, 1, 1]))]
    calibration = {"thresholds": {"0.05": 0.2}}
    out = at_thresholds(calibration, p_clean, clean_correct, y, seen)
    half = out["0.5"]
    assert half["clean_rejected"]["k"] == 1
    assert half["correct_or_rejected"]["k"] == 2                # images 1 (rejected) and 2 (flagged)
    assert half["robust_rejection_is_error"]["k"] == 1          # image 2 only: image 1 was rejected clean
    assert (half["attack_success"]["k"], half["attack_success"]["n"]) == (1, 2)   # image 0, of images 0 and 2
    strict = out["fpr 0.05"]                                     # at 0.2 image 0's example (0.3) is flagged too
    assert strict["correct_or_rejected"]["k"] == 3 and strict["attack_success"]["k"] == 0
    # the final examples of images 0 and 2 (0.3 and 0.8) against the four clean scores: 6 of 8 pairs ranked right
    assert out["roc_auc_final_examples"] == 0.75
