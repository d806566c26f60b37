"""airbench94: the reference architecture's shapes and size, the whitening init, and training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.models import Airbench94, build
from thresher.models.airbench import AIRBENCH94_RECIPE, init_whitening
from thresher.train.airbench import (
    lookahead_decay,
    lr_factor,
    train_airbench94,
    translate,
    tta_logits,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def structured_images(n: int, channels: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Images whose 2x2 patches are far from white: neighbouring pixels and the channels are
    strongly correlated, with some independent noise so no direction has near-zero variance."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size + 1, size + 1, generator=g)
    smooth = (base[..., 1:, 1:] + base[..., :-1, 1:] + base[..., 1:, :-1] + base[..., :-1, :-1])
    mix = torch.tensor([1.0, 0.8, 0.6][:channels]).view(1, -1, 1, 1)
    return 2 * smooth * mix + 0.5 * torch.randn(n, channels, size, size, generator=g)


def patch_second_moment(model: Airbench94, images: torch.Tensor) -> torch.Tensor:
    """E[z z^T] of the whitening filters' outputs (bias left out) over every 2x2 patch."""
    z = F.conv2d(images, model.whiten.weight).transpose(0, 1).flatten(1)  # [channels, patches]
    return z @ z.T / z.shape[1]


def test_output_shape_and_seam():
    torch.manual_seed(0)
    model = build("airbench94", 10, (3, 32, 32)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x), model.embed(x)
        pooled = model.body(model.whiten(x)).amax(dim=(2, 3))
    assert isinstance(model, Airbench94)
    assert logits.shape == (3, 10) and feats.shape == (3, 256) == (3, model.embed_dim)
    assert torch.equal(model.head(feats), logits)
    assert model.head.bias is None  # the reference's head has no bias
    # the reference's 1/9 output scale, folded into the features
    torch.testing.assert_close(logits, model.head(pooled) / 9, rtol=1e-5, atol=1e-7)


def test_parameter_count_by_hand():
    # Defaults on 32x32x3 inputs, 10 classes; convs have no bias, BatchNorms only a shift:
    #   whitening conv: 24 filters of 3x2x2 are a buffer (not counted); bias      24
    #   group 1: conv 24->64   24*64*9 = 13,824; conv 64->64   64*64*9 = 36,864;
    #            BN shifts 2*64 = 128                                         50,816
    #   group 2: conv 64->256  147,456; conv 256->256 589,824; shifts 512      737,792
    #   group 3: conv 256->256 589,824 twice; shifts 512                   1,180,160
    #   head 256->10, no bias  2,560                                           2,560
    #   total                                                              1,971,352
    # The reference (legacy/airbench94.py, run on CPU) has 1,972,792 nn.Parameters, of which
    # 1,971,352 train: its extra 288 whitening filters and 6 BatchNorm scales (2*(64+256+256) =
    # 1,152) have requires_grad=False, and are a buffer / absent here.
    model = build("airbench94", 10, (3, 32, 32))
    assert n_params(model) == 1_971_352
    assert n_params(model) + model.whiten.weight.numel() + 2 * (64 + 256 + 256) == 1_972_792
    assert round(n_params(model) / 1e6, 2) == 1.97  # the registered description's figure
    assert [n_params(g) for g in model.body[1:]] == [50_816, 737_792, 1_180_160]


def test_spatial_sizes_follow_the_reference():
    model = build("airbench94", 10, (3, 32, 32))
    x = model.whiten(torch.randn(2, 3, 32, 32))
    assert x.shape == (2, 24, 31, 31)  # 2x2 conv without padding
    sizes = []
    for group in model.body[1:]:
        x = group(x)
        sizes.append(x.shape[-1])
    assert sizes == [15, 7, 3]  # the reference's final MaxPool2d(3) is then a global max


def test_whitening_init_whitens_2x2_patches():
    torch.manual_seed(0)
    model = build("airbench94", 10, (3, 12, 12), widths=(8, 8, 8))
    images = structured_images(64)
    eye = torch.eye(12)
    before = patch_second_moment(model, images)[:12, :12]
    assert (before - eye).abs().max() > 1  # not white before: the check below can fail
    init_whitening(model, images, eps=0.0)
    moment = patch_second_moment(model, images)
    torch.testing.assert_close(moment[:12, :12], eye, rtol=0, atol=1e-4)
    torch.testing.assert_close(moment[12:, :12], -eye, rtol=0, atol=1e-4)  # negated copies
    init_whitening(model, images)  # the reference's eps = 5e-4 barely shrinks the variances here
    moment = patch_second_moment(model, images)[:12, :12]
    torch.testing.assert_close(moment, eye, rtol=0, atol=0.01)
    assert (moment.diagonal() <= 1).all()
    # frozen: a buffer saved with the model, never a parameter an optimiser could move
    assert not model.whiten.weight.requires_grad
    assert "whiten.weight" in model.state_dict()
    assert all(p is not model.whiten.weight for p in model.parameters())
    assert model.whiten.bias.requires_grad  # the reference trains the whitening bias


def test_whitening_init_is_deterministic_and_data_derived():
    images = structured_images(32)
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build("airbench94", 10, (3, 12, 12), widths=(8, 8, 8))
        init_whitening(model, images)
        weights.append(model.whiten.weight.clone())
    assert torch.equal(weights[0], weights[1])
    init_whitening(model, structured_images(32, seed=1))
    assert not torch.equal(model.whiten.weight, weights[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_whitening_init_on_gpu_matches_cpu():
    images = structured_images(32)
    cpu = build("airbench94", 10, (3, 12, 12), widths=(8, 8, 8))
    gpu = build("airbench94", 10, (3, 12, 12), widths=(8, 8, 8)).cuda()
    init_whitening(cpu, images)
    init_whitening(gpu, images.cuda())
    assert gpu.whiten.weight.is_cuda
    torch.testing.assert_close(gpu.whiten.weight.cpu(), cpu.whiten.weight, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("widths", [(64, 0, 256), (), (64, -1), (64.5, 128), (True,)])
def test_bad_widths_are_rejected(widths):
    with pytest.raises(ValueError, match="widths"):
        build("airbench94", 10, (3, 32, 32), widths=widths)


def test_too_small_images_and_bad_whitening_inputs_are_rejected():
    with pytest.raises(ValueError, match="too small.*9x9"):
        build("airbench94", 10, (3, 8, 8))
    assert build("airbench94", 10, (3, 9, 9)).embed_dim == 256  # 8 -> 4 -> 2 -> 1
    assert build("airbench94", 10, (3, 8, 8), widths=(16, 16)).embed_dim == 16
    model = build("airbench94", 10, (3, 12, 12), widths=(8, 8, 8))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        init_whitening(model, torch.randn(4, 1, 12, 12))
    with pytest.raises(ValueError, match="normalised floats"):
        init_whitening(model, torch.zeros(4, 3, 12, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="Airbench94"):
        init_whitening(build("simple_cnn", 10, (3, 12, 12)), torch.randn(4, 3, 12, 12))


def test_recipe_records_the_reference_hyperparameters():
    r = AIRBENCH94_RECIPE
    assert (r.batch_size, r.epochs, r.lr, r.momentum, r.nesterov) == (1024, 9.9, 11.5, 0.85, True)
    assert (r.weight_decay, r.bias_lr_scale, r.label_smoothing) == (0.0153, 64.0, 0.2)
    assert (r.translate, r.whiten_eps, r.whiten_bias_epochs) == (2, 5e-4, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lr = 1.0  # type: ignore[misc]


def test_a_few_sgd_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build("airbench94", 4, (3, 12, 12), widths=(16, 32, 32))
    x, y = structured_images(16), torch.arange(16) % 4
    init_whitening(model, x)
    # The reference steps 11.5 / (1024 * (1 + 1 / 0.15)) = 0.00146 on a loss summed over 1024
    # images: 1.5 per mean loss at the schedule's peak. The 1/9 output scale wants such rates.
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=AIRBENCH94_RECIPE.momentum,
                          nesterov=True)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


# --- the recipe's training loop (thresher.train.airbench) ------------------------------------

def test_recipe_schedules_by_hand():
    total = 100  # warm-up: int(0.23 * 100) = 23 steps from 0.2x to 1x, then down to 0.07x
    assert lr_factor(0, total) == pytest.approx(0.2)
    assert lr_factor(10, total) == pytest.approx(0.2 * 13 / 23 + 10 / 23)
    assert lr_factor(23, total) == pytest.approx(1.0)
    assert lr_factor(100, total) == pytest.approx(0.07)
    assert lr_factor(23 + 77 // 2, total) == pytest.approx(1 - 0.93 * 38 / 77)
    assert lookahead_decay(0, total) == 0 and lookahead_decay(50, total) == pytest.approx(
        0.95 ** 5 / 8)


def test_translate_crops_each_image_at_its_own_shift():
    n, pad = 64, 2
    images = torch.arange(n * 2 * 8 * 8, dtype=torch.float32).view(n, 2, 8, 8)
    padded = F.pad(images, (pad,) * 4, mode="reflect")
    out = translate(padded, pad, torch.Generator().manual_seed(0))
    found = set()
    for i in range(n):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
        found.add(hits[0])
    assert len(found) > 15  # the 25 shifts are all in use


def _two_colour_task(n: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (n,), generator=g)
    base = torch.randint(60, 196, (n, 3, 32, 32), generator=g).float()
    base[:, 0] += 50 * (2 * labels.float() - 1).view(-1, 1, 1)  # red up for class 1, down for 0
    return ArrayDataset(base.clamp(0, 255).to(torch.uint8), labels, name="colours",
                        classes=["low", "high"])


def test_recipe_learns_and_ends_on_the_lookahead_average():
    torch.manual_seed(0)
    model = build("airbench94", 2, (3, 32, 32), widths=(8, 16, 16))
    recipe = dataclasses.replace(AIRBENCH94_RECIPE, batch_size=64, epochs=3.5,
                                 whiten_images=256)
    rows = []
    out = train_airbench94(model, _two_colour_task(512, 0), recipe,
                           test=_two_colour_task(256, 1), device=torch.device("cpu"),
                           on_epoch=rows.append)
    assert out["steps"] == 28 and [r["epoch"] for r in rows] == [1, 2, 3, 4]  # ceil(8 x 3.5)
    assert out["test_acc"] > 0.9 and out["tta_test_acc"] > 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert model.whiten.bias.requires_grad is False  # frozen after 3 epochs
    x = torch.randn(5, 3, 32, 32)
    sym = x + x.flip(-1)  # mirror-symmetric inputs: the mirror average changes nothing
    assert torch.allclose(tta_logits(model, sym, "mirror"), tta_logits(model, sym, "none"),
                          atol=1e-5)
