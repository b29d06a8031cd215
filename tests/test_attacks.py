"""The attacks, on networks trained inside the session: the claims of their papers, checked on real MNIST."""

from __future__ import annotations

import pytest
import torch

from reabsnet.attacks import (
    ATTACKS,
    carlini_wagner_l2,
    carlini_wagner_linf,
    deepfool,
    deepfool_binary,
    fgsm,
    get_preset,
    pgd,
    random_targets,
)
from reabsnet.attacks.common import frozen

BOX = (-0.5, 0.5)


@pytest.fixture(scope="module")
def batch(mnist):
    x, y = mnist.split("test")
    return x[:24], y[:24]


@pytest.fixture(scope="module")
def results(small_model, batch):
    """Each attack once on the same 24 images, untargeted and targeted, shared by the tests below."""
    x, y = batch
    t = random_targets(y, 10, seed=0)
    out = {}
    for name in ("fgsm", "deepfool", "cw-l2", "cw-linf"):
        settings = get_preset(name, "smoke").settings
        out[name] = ATTACKS[name](small_model, x, y, **settings)
        out[name + "-t"] = ATTACKS[name](small_model, x, y, target=t, **settings)
    out["pgd-t"] = pgd(small_model, x, y, target=t, loss="margin", steps=40, step_size=0.02)
    return out, t


def test_every_output_is_in_the_box_and_the_record_matches_it(results, batch):
    x, _ = batch
    res, _ = results
    for name, r in res.items():
        assert r.x_adv.shape == x.shape, name
        assert r.x_adv.min() >= BOX[0] and r.x_adv.max() <= BOX[1], name
        delta = (r.x_adv - x).flatten(1)
        torch.testing.assert_close(r.l2, delta.norm(dim=1), msg=name)
        torch.testing.assert_close(r.linf, delta.abs().amax(dim=1), msg=name)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_stays_inside_eps(small_model, batch, norm, eps):
    x, y = batch
    r = pgd(small_model, x, y, eps=eps, norm=norm, step_size=eps / 4, steps=10, restarts=2)
    size = r.linf if norm == "linf" else r.l2
    assert (size <= eps + 1e-5).all()
    assert r.success.float().mean() > 0.2      # eps 0.1 / L2 1.0 break a one-epoch model on some images


def test_fgsm_respects_eps(results):
    res, _ = results
    assert (res["fgsm"].linf <= 0.3 + 1e-6).all()


def test_targeted_attacks_hit_the_target(results):
    res, t = results
    for name, rate in (("cw-l2-t", 0.95), ("cw-linf-t", 0.95), ("pgd-t", 0.75)):  # PGD-t is bounded: eps 0.3
        r = res[name]
        assert r.success.float().mean() >= rate, name
        assert (r.label[r.success] == t[r.success]).all(), name


def test_deepfool_and_cw_succeed_on_almost_every_image(results):
    res, _ = results
    for name in ("deepfool", "cw-l2", "cw-linf"):
        assert res[name].success.float().mean() >= 0.98, name


def test_cw_l2_finds_smaller_perturbations_than_deepfool_than_fgsm(results):
    # each pair compared on the images both attacks broke. CW-L2 at the smoke preset (3 x 80 iterations), measured
    # on the AMD CPU's small model (one thread): medians 1.43 (CW-L2) against 1.84 (DeepFool) on all 24 images; the
    # paper profile's CPU preset (5 x 300 iterations, 6x the time) gives 1.37. Restricted to the images FGSM also
    # broke (the easiest), DeepFool's near-linear step is already close to minimal there and the comparison flips
    # with the machine's floating-point path (1.25 against 1.20 on the Intel CPU).
    res, _ = results
    cw, df, fgsm = res["cw-l2"], res["deepfool"], res["fgsm"]
    both = cw.success & df.success
    assert both.sum() >= 20
    assert cw.l2[both].median() < df.l2[both].median()
    both = df.success & fgsm.success
    assert both.sum() >= 15
    assert df.l2[both].median() < fgsm.l2[both].median()


def test_cw_l2_binary_search_lowers_a_constant_that_is_too_large(results, small_model, batch):
    # started 100x too high, the search must bring the constant down to where the distances are those of a start
    # at 0.1 (measured on the Intel CPU's small model: median L2 1.58 against 1.63 with 2 threads, 1.62 against
    # 1.41 with one, whose small model differs in rounding; a search that never lowers its upper bound stays at
    # c = 10 and gives 2.36)
    res, _ = results
    settings = get_preset("cw-l2", "smoke").settings
    high = carlini_wagner_l2(small_model, *batch, **{**settings, "initial_const": 10.0})
    low = res["cw-l2"]
    assert high.success.all() and low.success.all()
    assert high.l2.median() < 1.25 * low.l2.median()


def test_cw_linf_finds_smaller_linf_than_cw_l2(results):
    res, _ = results
    both = res["cw-l2"].success & res["cw-linf"].success
    assert res["cw-linf"].linf[both].median() < res["cw-l2"].linf[both].median()


def test_same_seed_same_output_other_seed_differs(small_model, batch):
    x, y = batch
    a = pgd(small_model, x, y, steps=3, seed=7).x_adv
    b = pgd(small_model, x, y, steps=3, seed=7).x_adv
    c = pgd(small_model, x, y, steps=3, seed=8).x_adv
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(deepfool(small_model, x, y).x_adv, deepfool(small_model, x, y).x_adv)


def test_parameters_are_frozen_during_and_restored_after(small_model, batch):
    x, y = batch
    small_model.train()
    for p in small_model.parameters():
        p.grad = None
    params = [p.clone() for p in small_model.parameters()]
    seen = []
    hook = small_model.register_forward_hook(
        lambda m, i, o: seen.append((m.training, any(p.requires_grad for p in m.parameters()))))
    try:
        carlini_wagner_l2(small_model, x[:4], y[:4], binary_search_steps=1, max_iterations=5)
    finally:
        hook.remove()
        was_training = small_model.training
        small_model.eval()
    assert seen and all(not training and not grads for training, grads in seen)
    assert was_training and all(p.requires_grad and p.grad is None for p in small_model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params, small_model.parameters(), strict=True))


def test_fgsm_fails_on_the_distilled_master_but_deepfool_and_cw_succeed(smoke_master, batch):
    # Paper Table 2, "master network only": distillation saturates the softmax, so the cross-entropy gradient
    # vanishes (gradient masking); attacks on the logits are unaffected.
    x, y = batch
    assert fgsm(smoke_master, x, y).success.float().mean() <= 0.2
    assert deepfool(smoke_master, x, y).success.float().mean() >= 0.98
    assert carlini_wagner_l2(smoke_master, x, y, **get_preset("cw-l2", "smoke").settings).success.float().mean() \
        >= 0.98


def test_already_misclassified_inputs_are_returned_unchanged(small_model, batch):
    x, y = batch
    wrong = (small_model(x).argmax(1) + 1) % 10       # labels the model disagrees with
    r = deepfool(small_model, x, wrong)
    assert r.success.all() and (r.iterations == 0).all() and torch.equal(r.x_adv, x)
    r = carlini_wagner_linf(small_model, x[:8], wrong[:8], max_iterations=5)
    assert r.success.all() and (r.linf <= 1e-6).all()   # up to the tanh round trip


def test_deepfool_binary_moves_inputs_to_the_chosen_side():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        net[3].weight.mul_(10)       # a confident classifier, so both sides are reachable inside the box
    x = torch.rand(200, 1, 4, 4) - 0.5
    before = net(x).softmax(1)[:, 0]
    x_new, iters, reached = deepfool_binary(net, x, side=0, threshold=0.7, max_iter=50)
    after = net(x_new).softmax(1)[:, 0]
    assert reached.float().mean() > 0.9
    assert (after[reached] >= 0.7 - 1e-4).all()
    already = before >= 0.7
    assert torch.equal(x_new[already], x[already]) and (iters[already] == 0).all()
    assert x_new.min() >= -0.5 and x_new.max() <= 0.5


def test_bad_inputs_are_value_errors(small_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="outside the box"):
        fgsm(small_model, x + 2, y)
    with pytest.raises(ValueError, match="same first dimension"):
        deepfool(small_model, x, y[:3])
    with pytest.raises(ValueError, match="norm"):
        pgd(small_model, x, y, norm="l1")


def test_frozen_restores_even_on_error(small_model):
    with pytest.raises(RuntimeError), frozen(small_model):
        raise RuntimeError("boom")
    assert all(p.requires_grad for p in small_model.parameters())


def test_attacks_work_inside_a_callers_no_grad(small_model, batch):
    x, y = batch
    with torch.no_grad():
        assert deepfool(small_model, x[:8], y[:8]).success.all()
        assert fgsm(small_model, x[:8], y[:8]).x_adv.shape == x[:8].shape


def test_deepfool_margin_gradients_are_the_class_gradient_differences():
    from reabsnet.attacks.deepfool import margin_gradients
    from reabsnet.models import create_model

    torch.manual_seed(0)
    model = create_model("master").eval()
    x = torch.rand(5, 1, 28, 28) - 0.5
    label = torch.tensor([0, 1, 2, 3, 4])
    cand = torch.tensor([[1, 2], [0, 9], [5, 3], [3, 3], [8, 0]])   # a repeated candidate is fine too
    f, w = margin_gradients(model, x, label, cand)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    per_class = torch.stack([torch.autograd.grad(logits[:, c].sum(), xg, retain_graph=True)[0] for c in range(10)])
    rows = torch.arange(5)
    for j in range(cand.shape[1]):
        torch.testing.assert_close(f[:, j], (logits[rows, cand[:, j]] - logits[rows, label]).detach())
        torch.testing.assert_close(w[j], per_class[cand[:, j], rows] - per_class[label, rows], rtol=1e-4, atol=1e-6)
