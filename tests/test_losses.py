import math

import pytest
import torch

from cluster.config import load_config
from cluster.methods import method_of
from learner.losses import cdpo_loss, dpo_loss, ipo_loss, preference_margin, reward_metrics, spce_loss

# The losses by their old names, as the methods that own them (cluster/methods/) compute them.
METHOD_OF_LOSS = {"spce": "osp", "dpo": "dpo", "cdpo": "cdpo", "ipo": "ipo"}


def pair_loss(name: str, h: torch.Tensor, p: torch.Tensor, beta: float, eps: float = 0.0) -> torch.Tensor:
    """The per-pair loss of the method whose loss is `name`, ties masked (Method.masked_pair_loss)."""
    cfg = load_config(None, [f"method={METHOD_OF_LOSS[name]}", f"loss.beta={beta}", f"loss.label_smoothing={eps}"])
    return method_of(cfg).masked_pair_loss(h, p)


def log_sigmoid(x: float) -> float:
    return math.log(1 / (1 + math.exp(-x)))


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_preference_margin():
    # (-1 - -1.5) - (-3 - -2) = 0.5 + 1 = 1.5
    h = preference_margin(t(-1.0), t(-3.0), t(-1.5), t(-2.0))
    assert h.item() == pytest.approx(1.5)


def test_spce_hand_computed():
    h, beta, p = 0.7, 0.5, 0.8
    z = beta * h  # 0.35
    expected = -(p * log_sigmoid(z) + (1 - p) * log_sigmoid(-z))
    got = spce_loss(t(h), t(p), beta)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert got.item() == pytest.approx(0.6033821554, rel=1e-9)


def test_spce_per_pair_p_and_float_p():
    h = t(0.7, -0.2)
    got = spce_loss(h, t(0.8, 0.6), beta=0.5)
    exp = [-(p * log_sigmoid(0.5 * x) + (1 - p) * log_sigmoid(-0.5 * x))
           for x, p in [(0.7, 0.8), (-0.2, 0.6)]]
    assert got.tolist() == pytest.approx(exp, rel=1e-12)
    assert spce_loss(h, 0.8, 0.5)[0].item() == pytest.approx(exp[0], rel=1e-12)


def test_spce_hard_labels_are_dpo():
    h = t(0.7, -1.3, 4.0)
    assert torch.allclose(spce_loss(h, 1.0, 0.1), dpo_loss(h, 0.1))
    assert torch.allclose(spce_loss(h, 0.0, 0.1), dpo_loss(-h, 0.1))


def test_spce_constant_p_is_cdpo():
    h, eps = t(0.7, -1.3, 4.0), 0.1
    assert torch.allclose(spce_loss(h, 1 - eps, 0.3), cdpo_loss(h, 0.3, eps))


def test_dpo_and_cdpo_hand_computed():
    assert dpo_loss(t(0.7), 0.5).item() == pytest.approx(-log_sigmoid(0.35), rel=1e-12)
    expected = -0.9 * log_sigmoid(0.35) - 0.1 * log_sigmoid(-0.35)
    assert cdpo_loss(t(0.7), 0.5, 0.1).item() == pytest.approx(expected, rel=1e-12)


def test_ipo_hand_computed():
    # beta = 0.5 -> target margin 1/(2·0.5) = 1: (0.7 - 1)² = 0.09, (3 - 1)² = 4
    assert ipo_loss(t(0.7, 3.0), 0.5).tolist() == pytest.approx([0.09, 4.0], rel=1e-12)
    # beta = 0.1 -> target 5: (0 - 5)² = 25
    assert ipo_loss(t(0.0), 0.1).item() == pytest.approx(25.0)


def test_spce_gradient_is_beta_sigma_minus_p():
    beta = 0.5
    h = t(0.7, -2.0, 3.0).requires_grad_()
    p = t(0.8, 0.6, 0.5)
    spce_loss(h, p, beta).sum().backward()
    expected = beta * (torch.sigmoid(beta * h.detach()) - p)
    assert torch.allclose(h.grad, expected, atol=1e-12)
    # and by hand for the first pair: 0.5 · (σ(0.35) - 0.8)
    assert h.grad[0].item() == pytest.approx(0.5 * (1 / (1 + math.exp(-0.35)) - 0.8), rel=1e-12)


def test_spce_is_stable_for_large_margins():
    h = t(1e4, -1e4)
    loss = spce_loss(h.requires_grad_(), t(1.0, 1.0), 1.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(h.grad).all()
    assert loss.tolist() == pytest.approx([0.0, 1e4])


def test_each_method_uses_its_loss():
    """Would catch a method wired to another's loss (cdpo computing dpo, say)."""
    h, p = t(0.7, -0.4), t(0.8, 0.9)
    assert torch.equal(pair_loss("spce", h, p, 0.5), spce_loss(h, p, 0.5))
    assert torch.equal(pair_loss("dpo", h, p, 0.5), dpo_loss(h, 0.5))
    assert torch.equal(pair_loss("cdpo", h, p, 0.5, 0.2), cdpo_loss(h, 0.5, 0.2))
    assert torch.equal(pair_loss("ipo", h, p, 0.5), ipo_loss(h, 0.5))


def _grad(name: str, h: float, p: float, beta: float, eps: float = 0.0) -> float:
    x = t(h).requires_grad_()
    pair_loss(name, x, t(p), beta, eps).sum().backward()
    return x.grad.item()


@pytest.mark.parametrize("name", ["spce", "dpo", "cdpo", "ipo"])
@pytest.mark.parametrize("h", [-3.0, -0.4, 0.0, 0.7, 25.0])
def test_a_tie_gives_no_gradient_under_every_loss(name, h):
    """p = 0.5 exactly has no verdict. The bugs this catches: DPO/cDPO/IPO ignoring p and
    training a tie as a full preference for whichever answer came first (DPO's gradient at
    h = 0 is −β/2), and SPCE pulling a tie's h toward 0."""
    assert _grad(name, h, 0.5, 0.5, 0.1) == 0.0
    assert pair_loss(name, t(h), t(0.5), 0.5, 0.1).item() == 0.0


def test_every_loss_gradient_by_hand_for_a_verdict_either_way():
    """dL/dh in float64 against the formulas, at p = 0.8 (chosen preferred) and p = 0.2
    (rejected preferred: the verdict's sign flips the margin for DPO, cDPO and IPO)."""
    beta, eps, h = 0.5, 0.1, 0.7
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    z = beta * h
    # SPCE: β(σ(βh) − p), whatever side p is on.
    assert _grad("spce", h, 0.8, beta) == pytest.approx(beta * (sig(z) - 0.8), abs=1e-15)
    assert _grad("spce", h, 0.2, beta) == pytest.approx(beta * (sig(z) - 0.2), abs=1e-15)
    # DPO: −logσ(βsh) → −βs(1 − σ(βsh)), s = sign(p − 0.5); p's size is ignored.
    assert _grad("dpo", h, 0.8, beta) == pytest.approx(-beta * (1 - sig(z)), abs=1e-15)
    assert _grad("dpo", h, 0.6, beta) == pytest.approx(-beta * (1 - sig(z)), abs=1e-15)
    assert _grad("dpo", h, 0.2, beta) == pytest.approx(beta * (1 - sig(-z)), abs=1e-15)
    # cDPO: s·β(σ(βsh) − (1 − ε)).
    assert _grad("cdpo", h, 0.8, beta, eps) == pytest.approx(beta * (sig(z) - (1 - eps)), abs=1e-15)
    assert _grad("cdpo", h, 0.2, beta, eps) == pytest.approx(-beta * (sig(-z) - (1 - eps)), abs=1e-15)
    # IPO: (sh − 1/(2β))² → 2s(sh − 1/(2β)).
    assert _grad("ipo", h, 0.8, beta) == pytest.approx(2 * (h - 1 / (2 * beta)), abs=1e-15)
    assert _grad("ipo", h, 0.2, beta) == pytest.approx(-2 * (-h - 1 / (2 * beta)), abs=1e-15)


def test_hard_labels_are_the_verdict_either_way_and_make_spce_dpo():
    from learner.losses import hard_labels

    p = t(0.5, 0.51, 0.9, 0.49, 0.1)
    assert hard_labels(p).tolist() == [0.5, 1.0, 1.0, 0.0, 0.0]
    h = t(0.3, -1.2, 2.0, 0.4, -0.7)
    assert torch.allclose(pair_loss("spce", h, hard_labels(p), 0.3), pair_loss("dpo", h, p, 0.3), atol=1e-15)
    # Hard labels change nothing for a loss that reads the verdict alone.
    for name in ("dpo", "cdpo", "ipo"):
        assert torch.equal(pair_loss(name, h, hard_labels(p), 0.3, 0.1), pair_loss(name, h, p, 0.3, 0.1))


def test_batch_mean_leaves_ties_out_and_spans_ranks():
    from learner.losses import batch_mean

    per_pair, p = t(0.6, 0.0, 0.2), t(0.9, 0.5, 0.7)  # the middle pair is a tie
    assert batch_mean(per_pair, p).item() == pytest.approx(0.4)  # (0.6 + 0.2) / 2, not / 3
    # Two ranks, 5 decided pairs in the step: each rank's sum × 2 / 5; DeepSpeed's average
    # of the two is then (sum_0 + sum_1) / 5.
    assert batch_mean(per_pair, p, decided_in_step=5, world_size=2).item() == pytest.approx(0.8 * 2 / 5)
    assert batch_mean(t(0.0), t(0.5)).item() == 0.0  # a batch of ties: zero, not NaN


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan")])
def test_invalid_beta(beta):
    for fn in (lambda: spce_loss(t(0.1), 0.5, beta), lambda: dpo_loss(t(0.1), beta),
               lambda: cdpo_loss(t(0.1), beta, 0.1), lambda: ipo_loss(t(0.1), beta)):
        with pytest.raises(ValueError, match="beta"):
            fn()


@pytest.mark.parametrize("p", [1.5, -0.25])
def test_invalid_p_names_value(p):
    with pytest.raises(ValueError, match=str(p)):
        spce_loss(t(0.1, 0.2), t(0.5, p), 0.5)


def test_invalid_p_nan_and_none():
    with pytest.raises(ValueError):
        spce_loss(t(0.1), t(float("nan")), 0.5)
    with pytest.raises(ValueError):
        pair_loss("spce", t(0.1), None, 0.5)


def test_invalid_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        cdpo_loss(t(0.1), 0.5, 1.5)


def test_reward_metrics():
    # chosen rewards 0.5·(0.5, -1) = (0.25, -0.5); rejected 0.5·(-1, 0) = (-0.5, 0)
    # margins (0.75, -0.5) -> mean 0.125, accuracy 0.5
    m = reward_metrics(t(-1.0, -3.0), t(-2.0, -1.0), t(-1.5, -2.0), t(-1.0, -1.0), beta=0.5)
    assert m == pytest.approx(
        {"rewards/chosen": -0.125, "rewards/rejected": -0.25,
         "rewards/margin": 0.125, "rewards/accuracy": 0.5}
    )
    assert all(isinstance(v, float) for v in m.values())


def test_preference_diagnostics_by_hand():
    from learner.losses import preference_diagnostics

    pc = torch.tensor([-10.0, -20.0], dtype=torch.float64)
    pr = torch.tensor([-12.0, -18.0], dtype=torch.float64)
    rc = torch.tensor([-11.0, -20.0], dtype=torch.float64)
    rr = torch.tensor([-11.0, -19.0], dtype=torch.float64)
    p = torch.tensor([0.9, 0.52], dtype=torch.float64)
    d = preference_diagnostics((pc, pr, rc, rr), p, 0.5, (torch.tensor([5, 7]), torch.tensor([3, 4])))
    # h = (−10+11) − (−12+11) = 2 and (−20+20) − (−18+19) = −1
    assert d["logps/chosen"] == pytest.approx(-15.0) and d["logps/rejected"] == pytest.approx(-15.0)
    assert d["kl/policy_sft"] == pytest.approx((1 + 0 - 1 + 1) / 4)  # log-ratios 1, 0, −1, 1
    expected = (abs(1 / (1 + math.exp(-1.0)) - 0.9) + abs(1 / (1 + math.exp(0.5)) - 0.52)) / 2
    assert d["fit/abs_error"] == pytest.approx(expected, abs=1e-7)
    assert d["strength/near_half"] == 0.5
    assert (d["length/chosen"], d["length/rejected"]) == (6.0, 3.5)


def test_length_normalized_margin_and_rpo_nll_by_hand():
    from learner.losses import length_normalized, rpo_nll

    pc, pr = torch.tensor([-12.0], dtype=torch.float64), torch.tensor([-30.0], dtype=torch.float64)
    rc, rr = torch.tensor([-15.0], dtype=torch.float64), torch.tensor([-27.0], dtype=torch.float64)
    lc, lr = torch.tensor([4]), torch.tensor([10])
    npc, npr, nrc, nrr = length_normalized(pc, pr, rc, rr, lc, lr)
    assert (npc.item(), npr.item(), nrc.item(), nrr.item()) == (-3.0, -3.0, -3.75, -2.7)
    h = preference_margin(npc, npr, nrc, nrr)
    assert h.item() == pytest.approx((-3.0 + 3.75) - (-3.0 + 2.7), abs=1e-12)  # 0.75 + 0.3 = 1.05
    assert preference_margin(pc, pr, rc, rr).item() == 6.0  # summed: (3) − (−3)
    # IPO regresses the normalised margin onto 1/(2β) = 5 at β = 0.1: (1.05 − 5)²
    assert ipo_loss(h, 0.1).item() == pytest.approx((1.05 - 5.0) ** 2, abs=1e-12)
    assert rpo_nll(t(-12.0, -3.0), t(-1.0, -1.0), torch.tensor([4, 1]), torch.tensor([1, 1]), t(0.9, 0.7)).item() == 3.0
    # loss.length_normalize=null is the method's own default: on for IPO only
    normalized = lambda *o: method_of(load_config(None, list(o))).length_normalize()  # noqa: E731
    assert normalized("method=ipo") and not normalized("method=osp")
    assert normalized("method=osp", "loss.length_normalize=true") and not normalized("method=ipo", "loss.length_normalize=false")


def test_rpo_nll_trains_the_answer_p_prefers_on_either_side():
    """Bug it catches: the NLL term always on "chosen", so a pair the judge oriented the other way
    (p < 0.5: "rejected" is preferred) was pushed toward the answer the loss trains away from."""
    from learner.losses import rpo_nll

    pc = t(-12.0, -3.0, -5.0).requires_grad_()
    pr = t(-10.0, -8.0, -7.0).requires_grad_()
    lc, lr = torch.tensor([4, 1, 5]), torch.tensor([5, 2, 7])
    p = t(0.9, 0.2, 0.5)  # chosen preferred; rejected preferred; a tie (no preferred answer)
    nll = rpo_nll(pc, pr, lc, lr, p)
    # By hand: pair 0 chosen 12/4 = 3, pair 1 rejected 8/2 = 4, the tie left out: (3 + 4) / 2.
    assert nll.item() == pytest.approx(3.5, abs=1e-12)
    nll.backward()
    # d/d logp = −1/(length · decided pairs): only the preferred side of each decided pair moves.
    assert pc.grad.tolist() == pytest.approx([-1 / 8, 0.0, 0.0])
    assert pr.grad.tolist() == pytest.approx([0.0, -1 / 4, 0.0])
    # The hard verdict gives the same term: only the side matters, not how far p is from 0.5.
    assert rpo_nll(pc, pr, lc, lr, t(1.0, 0.0, 0.5)).item() == pytest.approx(3.5, abs=1e-12)
