"""Per-example scores against hand-computed values and autograd."""

import math

import torch
import torch.nn.functional as F

from thresher.scoring import el2n, entropy, grad_norm, least_confidence, margin

P = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])


def test_margin_is_minus_the_top_two_gap():
    assert torch.allclose(margin(P), torch.tensor([-0.2, -0.85, 0.0, -1.0]))


def test_entropy_in_nats():
    expected = [-(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)),
                -(0.9 * math.log(0.9) + 2 * 0.05 * math.log(0.05)), math.log(3), 0.0]
    assert torch.allclose(entropy(P), torch.tensor(expected), atol=1e-6)


def test_least_confidence_and_el2n():
    assert torch.allclose(least_confidence(P), torch.tensor([0.5, 0.1, 2 / 3, 0.0]))
    y = torch.tensor([1, 0, 2, 0])
    expected = [math.sqrt(0.25 + 0.49 + 0.04), math.sqrt(0.01 + 2 * 0.0025),
                math.sqrt(2 / 9 + 4 / 9 * 1), 0.0]
    assert torch.allclose(el2n(P, y), torch.tensor(expected), atol=1e-6)


def test_uncertain_rows_score_higher_for_every_score():
    confident, unsure = P[1:2], P[2:3]
    for fn in (margin, entropy, least_confidence):
        assert fn(unsure) > fn(confident)


def test_closed_form_grad_norm_matches_autograd():
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 4)
    emb = torch.randn(6, 5)
    y = torch.randint(0, 4, (6,))
    probs = head(emb).softmax(1).detach()
    for i in range(6):
        head.zero_grad()
        F.cross_entropy(head(emb[i:i + 1]), y[i:i + 1]).backward()
        full = torch.cat([head.weight.grad.flatten(), head.bias.grad])
        assert torch.allclose(grad_norm(probs, emb, y)[i], full.norm(), atol=1e-5)
        # a bias-free head (airbench94's): the weights' gradient alone
        assert torch.allclose(grad_norm(probs, emb, y, bias=False)[i],
                              head.weight.grad.norm(), atol=1e-5)
