"""GaLore's invariants: projected moment shapes, the refresh cadence, updates in the projector's
span, plain AdamW / SGD where nothing is projected, resumption, failure modes, the registry."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thresher.cli import main
from thresher.optim import GaLoreAdamW, GaLoreSGD, chosen_weights
from thresher.optim.galore import projection_side
from thresher.train import build_optimizer
from thresher.train.optimizers import adamw_state_bytes, state_bytes


class Net(nn.Module):
    """A conv layer (8 x 3*3*3 kernel), a wide-to-narrow and a narrow-to-wide linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 40)
        self.head = nn.Linear(40, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def batch(i: int):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(3, (16,), generator=g)


def make(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for i in steps:
        x, y = batch(i)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_projection_sides_follow_the_reference_names():
    assert projection_side(64, 32, "std") == "right" and projection_side(32, 64, "std") == "left"
    assert projection_side(64, 32, "reverse_std") == "left"
    assert projection_side(32, 64, "reverse_std") == "right"
    assert [projection_side(5, 9, t) for t in ("left", "right", "full")] == \
        ["left", "right", "full"]


def test_moments_have_the_projected_shape_and_the_state_shrinks():
    model = make()
    opt = GaLoreAdamW(model.parameters(), lr=1e-3, rank=4)
    train(model, opt, range(2))
    st = opt.state
    assert st[model.conv.weight]["exp_avg"].shape == (4, 27)  # 8 x 27: left, r x n
    assert st[model.conv.weight]["projector"].shape == (8, 4)
    assert st[model.fc1.weight]["exp_avg"].shape == (4, 128)  # 24 x 128: left, r x n
    assert st[model.fc2.weight]["exp_avg"].shape == (40, 4)  # 40 x 24: right, m x r
    assert st[model.fc2.weight]["projector"].shape == (4, 24)
    assert st[model.head.weight]["exp_avg"].shape == (3, 40)  # rank 4 >= 3: plain AdamW
    assert st[model.fc1.bias]["exp_avg"].shape == (24,)
    assert opt.report()["projected"] == 3 and opt.report()["full_rank"] == ["(3, 40): rank 4 >= 3"]
    assert state_bytes(opt) < 0.5 * adamw_state_bytes(model)


def test_the_projector_changes_exactly_every_gap_steps():
    model = make()
    opt = GaLoreAdamW(model.parameters(), lr=1e-2, rank=3, update_proj_gap=3)
    seen = []
    for i in range(8):
        train(model, opt, range(i, i + 1))
        seen.append(opt.state[model.fc2.weight]["projector"].clone())
    changed = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    # refreshed at the steps numbered 0, 3 and 6: the 4th and 7th steps change it
    assert changed == [False, False, True, False, False, True, False]


@pytest.mark.parametrize("proj_type", ["std", "reverse_std", "left", "right", "full"])
def test_an_update_lies_in_the_projectors_span(proj_type):
    model = make()
    opt = GaLoreAdamW(model.parameters(), lr=0.1, rank=3, proj_type=proj_type, scale=1.0)
    train(model, opt, range(3))
    w = model.fc2.weight  # 40 x 24
    before = w.detach().clone()
    train(model, opt, range(3, 4))
    delta = (w.detach() - before).double()
    tol = 1e-4 * delta.abs().max()  # float32 rounding of the weights, far below the update
    state = opt.state[w]
    side = projection_side(40, 24, proj_type)
    if side in ("left", "full"):
        p = state["projector"].double()  # 40 x r
        assert (delta - p @ (p.t() @ delta)).abs().max() < tol
    if side in ("right", "full"):
        q = (state["projector_right"] if side == "full" else state["projector"]).double()
        assert (delta - (delta @ q.t()) @ q).abs().max() < tol
    # a full-rank update would not lie in any rank-3 span
    assert torch.linalg.matrix_rank(delta, rtol=1e-4).item() == 3


def test_nothing_projected_is_adamw_and_decay_is_decoupled():
    """With every weight at full rank GaLoreAdamW is AdamW: as eps vanishes the reference's
    arithmetic and torch's become the same formula (they place eps differently)."""
    a, b = make(), make()
    opt_a = GaLoreAdamW(a.parameters(), lr=1e-2, projected=set(), eps=1e-12)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, eps=1e-12, weight_decay=0.0)
    train(a, opt_a, range(5))
    train(b, opt_b, range(5))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # decay: Adam's first step moves each weight by lr * sign(g), then w *= 1 - lr * wd
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = GaLoreAdamW([w], lr=0.1, weight_decay=0.5, eps=1e-12)
    w.grad = torch.tensor([0.3, -0.2, -5.0])
    opt.step()
    expected = (torch.tensor([1.0, -2.0, 3.0]) - 0.1 * w.grad.sign()) * (1 - 0.1 * 0.5)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("nesterov", [False, True])
def test_galore_sgd_without_projection_is_torch_sgd(nesterov):
    a, b = make(), make()
    opt_a = GaLoreSGD(a.parameters(), lr=0.05, projected=set(), momentum=0.9,
                      nesterov=nesterov, weight_decay=5e-4)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov,
                            weight_decay=5e-4)
    train(a, opt_a, range(5))
    train(b, opt_b, range(5))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_galore_sgd_keeps_its_momentum_in_the_projected_space():
    model = make()
    opt = GaLoreSGD(model.parameters(), lr=0.05, rank=2, momentum=0.9)
    train(model, opt, range(2))
    assert opt.state[model.fc2.weight]["momentum_buffer"].shape == (40, 2)


@pytest.mark.parametrize("svd", ["full", "randomized"])
def test_a_state_dict_round_trip_resumes_bit_identically(svd):
    model = make()
    opt = GaLoreAdamW(model.parameters(), lr=1e-2, rank=3, update_proj_gap=4, svd=svd,
                      weight_decay=0.01)
    train(model, opt, range(6))
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # torch's state_dict holds the live tensors
    train(model, opt, range(6, 14))  # crosses refreshes at steps 8 and 12
    resumed = make(seed=1)  # different weights, overwritten by the load
    resumed.load_state_dict(saved_model)
    opt2 = GaLoreAdamW(resumed.parameters(), lr=1e-2, rank=3, update_proj_gap=4, svd=svd,
                       weight_decay=0.01)
    opt2.load_state_dict(saved_opt)
    train(resumed, opt2, range(6, 14))
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_randomized_svd_finds_the_span_of_a_low_rank_gradient():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(60, 3, generator=g) @ torch.randn(3, 50, generator=g)  # rank 3
    spans = []
    for svd in ("full", "randomized"):
        w = nn.Parameter(torch.zeros(60, 50))
        opt = GaLoreAdamW([w], rank=3, svd=svd)
        w.grad = grad.clone()
        opt.step()
        q = opt.state[w]["projector"]  # right: 3 x 50
        spans.append(q.t() @ q)
    torch.testing.assert_close(spans[0], spans[1], atol=1e-4, rtol=0)


def test_a_zero_gradient_keeps_the_projector_and_a_non_finite_one_raises():
    w = nn.Parameter(torch.randn(20, 10))
    opt = GaLoreAdamW([w], rank=2, update_proj_gap=1)
    w.grad = torch.randn(20, 10)
    opt.step()
    kept = opt.state[w]["projector"].clone()
    w.grad = torch.zeros(20, 10)
    opt.step()
    assert torch.equal(opt.state[w]["projector"], kept) and torch.isfinite(w).all()
    w.grad = torch.full((20, 10), float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite gradient .* shape \(20, 10\) at "
                                                 r"step 2"):
        opt.step()


def test_an_svd_that_does_not_converge_is_retried_in_float64(monkeypatch):
    svd = torch.linalg.svd
    calls = []

    def flaky(a, full_matrices=True):
        calls.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("did not converge")
        return svd(a, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    w = nn.Parameter(torch.randn(20, 10))
    opt = GaLoreAdamW([w], rank=2)
    w.grad = torch.randn(20, 10)
    opt.step()
    assert calls == [torch.float32, torch.float64]
    assert opt.state[w]["projector"].dtype == torch.float32 and torch.isfinite(w).all()


def test_per_layer_steps_match_the_optimizer_step_and_free_each_gradient():
    a, b = make(), make()
    opt_a = GaLoreAdamW(a.parameters(), lr=1e-2, rank=3)
    opt_b = GaLoreAdamW(b.parameters(), lr=1e-2, rank=3, per_layer=True)
    live, peak = {}, [0]

    def track(p):  # runs after the optimiser's hook on the same parameter
        live.pop(p, None)

    for p in b.parameters():
        p.register_hook(lambda g, p=p: live.__setitem__(p, g.numel()) or
                        peak.__setitem__(0, max(peak[0], sum(live.values()))))
        p.register_post_accumulate_grad_hook(track)
    train(a, opt_a, range(4))
    train(b, opt_b, range(4))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
        assert q.grad is None
    # one layer's gradients at a time, never the whole network's
    layers = [m for m in b.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert 0 < peak[0] <= max(m.weight.numel() + m.bias.numel() for m in layers)
    assert peak[0] < sum(p.numel() for p in b.parameters())


def test_the_registry_builds_galore_with_targets_and_refuses_bad_options():
    model = make()
    opt = build_optimizer("galore_adamw", model, lr=1e-3, weight_decay=0.1,
                          options={"rank": 2, "target": "linear"})
    assert isinstance(opt, GaLoreAdamW)
    assert {p for p, r in opt.ranks.items() if r} == {model.fc1.weight, model.fc2.weight,
                                                       model.head.weight}
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert chosen_weights(model, list(model.parameters()), "conv") == {model.conv.weight}
    assert chosen_weights(model, list(model.parameters()), r"fc\d") == {model.fc1.weight,
                                                                       model.fc2.weight}
    sgd = build_optimizer("galore_sgd", model, lr=0.1, momentum=0.9, nesterov=True,
                          options={"rank_fraction": 0.25})
    assert sgd.param_groups[0]["nesterov"] and sgd.ranks[model.fc2.weight] == 6  # 24 / 4
    with pytest.raises(ValueError, match="matches no weight.*conv.weight, fc1.weight"):
        build_optimizer("galore_adamw", model, lr=1e-3, options={"target": "attn"})
    with pytest.raises(ValueError, match="proj_type must be one of 'std', 'reverse_std'.*"
                                         "got 'side'"):
        build_optimizer("galore_adamw", model, lr=1e-3, options={"proj_type": "side"})
    with pytest.raises(ValueError, match="'galore_adamw' has no option 'ranks'.*did you mean "
                                         "'rank'"):
        build_optimizer("galore_adamw", model, lr=1e-3, options={"ranks": 2})
    with pytest.raises(ValueError, match="needs the model"):
        build_optimizer("galore_adamw", list(model.parameters()), lr=1e-3,
                        options={"target": "linear"})


def test_train_with_galore_records_the_state_saving(tmp_path):
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "g", "--epochs", "2",
                 "--model", "mlp", "--set", "fit.optimizer=galore_adamw",
                 "--set", "fit.optimizer_options={rank: 8, update_proj_gap: 5}",
                 "--set", "fit.lr=0.03"]) == 0
    summary = json.loads((tmp_path / "train" / "g" / "summary.json").read_text())
    metrics = summary["metrics"]
    assert 0 < metrics["optimizer_state_vs_adamw"] < 0.5
    assert metrics["test_acc"] > 0.5  # digits: learns, well above the 10% of chance
    per_seed = json.loads((tmp_path / "train" / "g" / "per_seed.json").read_text())
    assert per_seed[0]["optimizer"]["projected"] >= 1
