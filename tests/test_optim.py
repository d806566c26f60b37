"""`thresher.optim`: flat gradient buffers and A-GEM's projection."""

import torch
from torch import nn

from thresher.optim import FlatGrad, project


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_projection_by_hand():
    g = project(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    # g.g_ref = -1, |g_ref|^2 = 2: g - (-1/2) g_ref = (0.5, 0.5), now orthogonal to g_ref
    assert g.tolist() == [0.5, 0.5]


def test_projection_never_increases_the_memory_loss_to_first_order():
    rng = gen(1)
    for _ in range(200):
        grads = torch.randn(2, 50, generator=rng)
        g_ref, before = grads[1], grads[0].clone()
        out = project(grads)
        assert torch.dot(out, g_ref) >= -1e-4
        if torch.dot(before, g_ref) >= 0:
            assert torch.equal(out, before)  # agreeing gradients are left bit-for-bit alone


def test_flat_grad_writes_the_projection_where_the_optimizer_reads_it():
    model = nn.Linear(3, 2)
    grads = FlatGrad(model.parameters(), rows=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    grads.zero()
    model(torch.ones(4, 3)).sum().backward()
    assert torch.equal(grads.flat[:6], torch.full((6,), 4.0))  # backward lands in the vector
    grads.buffer[1] = -grads.flat
    grads.buffer[1, 0] = 1.0
    project(grads.buffer)
    expected = grads.flat.clone()
    optimizer.step()
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert torch.allclose(step, 0.5 * expected)
    momentum = torch.cat([optimizer.state[p]["momentum_buffer"].flatten()
                          for p in model.parameters()])
    assert torch.allclose(momentum, expected)  # the optimiser saw the projected gradient
    assert grads.intact()
