"""Model registry and the classifier seam: forward == head(embed), shapes, sizes, errors."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn

from thresher.models import (
    Classifier,
    ConvAutoencoder,
    ConvVAE,
    WrappedClassifier,
    build,
    list_models,
    model_options,
    register_model,
    registry,
)

# One appropriate input shape per registered model (the digits / MNIST / CIFAR sizes).
SHAPES = {
    "mlp": [(1, 8, 8), (1, 28, 28)],
    "simple_cnn": [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 20, 12)],
    "resnet20": [(3, 32, 32), (1, 28, 28), (3, 16, 16)],
    "resnet32": [(3, 32, 32)],
    "resnet44": [(3, 32, 32)],
    "resnet56": [(3, 32, 32)],
    "resnet110": [(3, 32, 32)],
    "resnet18": [(3, 32, 32), (1, 28, 28), (3, 8, 8)],
    "vgg11": [(3, 32, 32), (1, 64, 64)],
    "vgg13": [(3, 32, 32)],
    "vgg16": [(3, 32, 32)],
    "vgg19": [(3, 32, 32)],
    "vit_tiny": [(3, 32, 32), (1, 28, 28), (3, 8, 8)],
    "airbench94": [(3, 32, 32), (1, 28, 28), (3, 16, 16)],
    "conv_autoencoder": [(1, 8, 8), (1, 28, 28), (3, 32, 32)],
    "conv_vae": [(1, 8, 8), (1, 28, 28), (3, 32, 32)],
}
CASES = [(name, shape) for name, shapes in SHAPES.items() for shape in shapes]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_is_covered():
    names = [info.name for info in list_models()]
    assert names == list(SHAPES)
    assert all(info.description for info in list_models())


@pytest.mark.parametrize("name,shape", CASES)
def test_seam_shapes_and_forward_equals_head_of_embed(name, shape):
    torch.manual_seed(0)
    model = build(name, 7, shape).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        logits, feats = model(x), model.embed(x)
    assert isinstance(model, Classifier)
    assert isinstance(model.head, nn.Linear)
    assert model.head.out_features == 7 == model.num_classes
    assert logits.shape == (3, 7)
    assert feats.shape == (3, model.head.in_features) == (3, model.embed_dim)
    torch.testing.assert_close(logits, model.head(feats), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,dim", [("mlp", 128), ("simple_cnn", 128), ("resnet20", 64),
                                      ("resnet18", 512), ("vgg16", 512), ("vit_tiny", 192),
                                      ("conv_autoencoder", 128)])
def test_default_embedding_sizes(name, dim):
    assert build(name, 10, (3, 32, 32)).embed_dim == dim


def test_mlp_widths_and_dropout():
    model = build("mlp", 10, (1, 28, 28), widths=(200, 200), dropout=0.2)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 200), (200, 200),
                                                                  (200, 10)]
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    assert build("mlp", 10, (1, 8, 8), widths=()).embed_dim == 64  # logistic regression


@pytest.mark.parametrize("widths", [(), (200,), (64, 32)])
def test_mlp_closed_form_gradient_equals_autograd(widths):
    torch.manual_seed(0)
    model = build("mlp", 10, (1, 28, 28), widths=widths)
    x, y = torch.randn(17, 1, 28, 28), torch.randint(0, 10, (17,))
    loss = nn.functional.cross_entropy(model(x), y)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    grads = [torch.full_like(p, 7.0) for p in model.parameters()]  # replaced, not added to
    assert model.loss_grad(x, y, grads).item() == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_closed_form_gradient_is_declined_where_it_does_not_apply():
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    dropout = build("mlp", 3, (1, 8, 8), widths=[5], dropout=0.5)
    assert dropout.loss_grad(x, y, [torch.zeros_like(p) for p in dropout.parameters()]) is None
    cnn = build("simple_cnn", 3, (1, 8, 8))
    assert cnn.loss_grad(x, y, [torch.zeros_like(p) for p in cnn.parameters()]) is None


def test_yaml_style_arguments_are_accepted():
    model = build("mlp", np.int64(3), [1, 8, 8], widths=[32, 16])
    assert model.embed_dim == 16 and model.num_classes == 3


# Parameter counts -------------------------------------------------------------------------------

# He et al. 2016, Table 6 (CIFAR-10, option A), in millions.
PAPER_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
           "resnet110": 1.7}
# Exact counts of the widely used akamaster/pytorch_resnet_cifar10 implementation (option A)
# and of kuangliu/pytorch-cifar's ResNet18 and VGGs, for 10 classes: independent references.
REFERENCE = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
             "resnet56": 853_018, "resnet110": 1_727_962, "resnet18": 11_173_962,
             "vgg11": 9_231_114, "vgg13": 9_416_010, "vgg16": 14_728_266, "vgg19": 20_040_522}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_parameter_counts_match_references(name):
    count = n_params(build(name, 10, (3, 32, 32)))
    assert count == REFERENCE[name]
    if name in PAPER_M:  # and the paper's rounded figure, at the paper's precision
        digits = len(str(PAPER_M[name]).split(".")[1])
        assert round(count / 1e6, digits) == PAPER_M[name]


def test_resnet20_is_about_027m_and_option_b_adds_projections():
    a = n_params(build("resnet20", 10, (3, 32, 32)))
    b = n_params(build("resnet20", 10, (3, 32, 32), shortcut="B"))
    assert 260_000 <= a <= 280_000
    # two 1x1 projections (16->32, 32->64) with their BatchNorms
    assert b - a == 16 * 32 + 32 * 64 + 2 * (32 + 64)


@pytest.mark.parametrize("name,options", [("resnet56", {}), ("resnet18", {"width": 8})])
def test_resnet_convs_use_kaiming_init(name, options):
    torch.manual_seed(0)
    conv = build(name, 10, (3, 32, 32), **options).blocks[-1].conv2  # 64 -> 64, fan_in 576
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.03)


def test_resnet18_stages_and_width_option():
    model = build("resnet18", 10, (3, 32, 32), width=8)
    assert model.embed_dim == 64
    assert [b.conv2.out_channels for b in model.blocks] == [8, 8, 16, 16, 32, 32, 64, 64]
    # no max-pool after the stride-1 stem: 32x32 is halved three times, to 4x4
    assert model.blocks(model.stem(torch.randn(2, 3, 32, 32))).shape == (2, 64, 4, 4)
    # projection shortcuts (1x1 conv + BN) exactly where the shape changes: entering stages 2-4
    assert sum(isinstance(b.shortcut, nn.Sequential) for b in model.blocks) == 3


# Vision Transformer -----------------------------------------------------------------------------

def test_vit_tiny_parameter_count_by_hand():
    # Defaults on 32x32x3 inputs, 10 classes (d = dim = 192, MLP width 4d = 768, depth 6):
    #   patch embedding: 4x4x3 conv to d, with bias 3*4*4*192 + 192                9,408
    #   [CLS] token + position embeddings (64 + 1)  192 + 65*192                  12,672
    #   per block: two LayerNorms                   2 * 2*192                        768
    #              qkv d -> 3d                      192*576 + 576                111,168
    #              output projection d -> d         192*192 + 192                 37,056
    #              MLP d -> 4d -> d                 192*768+768 + 768*192+192    295,872
    #              block                                                         444,864
    #   6 blocks                                                               2,669,184
    #   final LayerNorm                             2*192                            384
    #   head d -> 10                                192*10 + 10                    1,930
    #   total                                                                  2,693,578
    model = build("vit_tiny", 10, (3, 32, 32))
    assert n_params(model) == 2_693_578
    assert round(n_params(model) / 1e6, 1) == 2.7  # the registered description's figure
    assert n_params(model.blocks[0]) == 444_864


def test_vit_attention_matches_torch_multihead_attention():
    """The fused qkv layout (q, k, v, each split into heads) is nn.MultiheadAttention's."""
    torch.manual_seed(0)
    model = build("vit_tiny", 10, (3, 16, 16), dim=24, heads=4, depth=1).eval()
    attn = model.blocks[0].attn
    ref = nn.MultiheadAttention(24, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
        x = torch.randn(3, 17, 24)
        torch.testing.assert_close(attn(x), ref(x, x, x, need_weights=False)[0],
                                   rtol=1e-5, atol=1e-6)


def test_vit_init_and_dropout():
    torch.manual_seed(0)
    model = build("vit_tiny", 10, (3, 32, 32))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears] + [model.pos.flatten()])
    # a normal cut at +-2 std has 0.880 of its std
    assert weights.std().item() == pytest.approx(0.02 * 0.880, rel=0.02)
    assert weights.abs().max().item() <= 0.04
    assert all(not m.bias.any() for m in linears)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 6 + 1
    assert all(bool((m.weight == 1).all()) and not m.bias.any() for m in norms)
    model = build("vit_tiny", 10, (3, 16, 16), dim=32, depth=2, heads=2, dropout=0.1)
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model(x), model(x))  # dropout active in training
    model.eval()
    assert torch.equal(model(x), model(x))


# Autoencoder ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 27, 20)])
def test_autoencoder_round_trip_shape(shape):
    model = build("conv_autoencoder", 10, shape, latent_dim=16).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, 16)
        assert model.decode(z).shape == x.shape
        torch.testing.assert_close(model.reconstruct(x), model.decode(z))
        torch.testing.assert_close(model.embed(x), z)


def test_autoencoder_output_space():
    x = torch.randn(4, 1, 28, 28)
    assert isinstance(build("conv_autoencoder", 10, (1, 28, 28)), ConvAutoencoder)
    unbounded = build("conv_autoencoder", 10, (1, 28, 28)).reconstruct(x)
    assert unbounded.min() < 0  # normalised space: not squashed
    squashed = build("conv_autoencoder", 10, (1, 28, 28), sigmoid=True).reconstruct(x)
    assert squashed.min() >= 0 and squashed.max() <= 1


def test_autoencoder_learns_to_reconstruct():
    torch.manual_seed(0)
    model = build("conv_autoencoder", 10, (1, 8, 8), latent_dim=32)
    x = torch.randn(16, 1, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = (model.reconstruct(x) - x).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


# Training sanity --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SHAPES))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    shape = SHAPES[name][0]
    model = build(name, 10, shape)
    x = torch.randn(4, *shape)
    loss = nn.functional.cross_entropy(model(x), torch.arange(4))
    if isinstance(model, ConvAutoencoder):
        loss = loss + (model.reconstruct(x) - x).pow(2).mean()
    if isinstance(model, ConvVAE):
        loss = loss + model.terms(x.sigmoid()).sum()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not dead


@pytest.mark.parametrize("name,shape,options", [
    ("mlp", (1, 8, 8), {}), ("simple_cnn", (1, 8, 8), {}), ("resnet20", (3, 16, 16), {}),
    ("resnet18", (3, 16, 16), {"width": 8}),
    ("vit_tiny", (3, 16, 16), {"dim": 32, "depth": 2, "heads": 2}),
    ("conv_autoencoder", (1, 8, 8), {}),
])
def test_fits_random_labels(name, shape, options):
    """Optimisation end to end: 32 random labels memorised, judged in eval mode (BN stats)."""
    torch.manual_seed(0)
    model = build(name, 10, shape, **options)
    x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    accuracy = 0.0
    for step in range(1, 301):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:  # measured in eval mode, as a user would
            with torch.no_grad():
                accuracy = (model.eval()(x).argmax(1) == y).float().mean().item()
            if accuracy == 1.0:
                break
            model.train()
    assert accuracy == 1.0


@pytest.mark.parametrize("name,shape", [("resnet20", (3, 32, 32)), ("simple_cnn", (3, 32, 32)),
                                        ("resnet18", (3, 32, 32)), ("vgg11", (3, 32, 32)),
                                        ("vit_tiny", (3, 32, 32)),
                                        ("conv_autoencoder", (3, 32, 32))])
def test_channels_last_matches_contiguous(name, shape):
    torch.manual_seed(0)
    model = build(name, 10, shape).eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


# Errors -----------------------------------------------------------------------------------------

def test_unknown_model_lists_choices_and_suggests_closest():
    with pytest.raises(ValueError) as err:
        build("resnet_20", 10, (3, 32, 32))
    msg = str(err.value)
    assert "did you mean 'resnet20'" in msg
    assert all(info.name in msg for info in list_models())


def test_unknown_option_names_model_and_accepted_options():
    with pytest.raises(ValueError, match=r"mlp: unknown option\(s\) 'width' \(did you mean "
                                         r"'widths'\?\); accepted options: widths=\(128,\), "
                                         r"dropout=0.0"):
        build("mlp", 10, (1, 8, 8), width=(64,))
    assert model_options("resnet20") == {"shortcut": "A"}
    assert model_options("resnet18") == {"width": 64}
    assert model_options("vit_tiny") == {"patch_size": 4, "dim": 192, "depth": 6, "heads": 3,
                                         "mlp_ratio": 4.0, "dropout": 0.0}


@pytest.mark.parametrize("name,shape,needle", [
    ("resnet20", (3, 8, 8), "at least 16x16, got 8x8"),
    ("resnet20", (3, 32, 28), "square"),
    ("resnet20", (32, 32, 3), "square"),  # HWC passed as CHW
    ("resnet18", (3, 4, 4), "at least 8x8, got 4x4"),
    ("resnet18", (3, 32, 28), "square"),
    ("vgg11", (3, 16, 16), "at least 32x32"),
    ("vgg11", (3, 48, 48), "divisible by 32"),
    ("vgg16", (3, 64, 32), "square"),
    ("vit_tiny", (3, 30, 30), r"divisible by patch_size=4, got 30x30"),
    ("vit_tiny", (3, 2, 2), r"divisible by patch_size=4, got 2x2"),
    ("vit_tiny", (32, 32, 3), "square"),
    ("simple_cnn", (1, 7, 7), "too small for 3 conv/pool stages"),
    ("simple_cnn", (1, 28, 4), "need at least 8x8"),
    ("conv_autoencoder", (1, 4, 4), "too small for 3 stride-2 stages"),
])
def test_impossible_input_sizes(name, shape, needle):
    with pytest.raises(ValueError, match=f"^{name}: .*{needle}"):
        build(name, 10, shape)


@pytest.mark.parametrize("name,options,needle", [
    ("mlp", {"widths": (128, 0)}, "widths must be positive"),
    ("mlp", {"widths": (-5,)}, "widths must be positive"),
    ("mlp", {"widths": "128"}, "widths must be positive"),
    ("mlp", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ("simple_cnn", {"channels": ()}, "channels must not be empty"),
    ("simple_cnn", {"channels": (32, 64, 128, 256)}, "too small for 4"),  # 8x8 after 3 pools
    ("simple_cnn", {"hidden": 0}, "hidden must be positive"),
    ("resnet20", {"shortcut": "C"}, "shortcut must be one of"),
    ("resnet18", {"width": 0}, "width must be positive"),
    ("vgg11", {"hidden": -1}, "hidden must be a non-negative"),
    ("vgg11", {"dropout": 0.5}, "set hidden > 0"),
    ("vit_tiny", {"dim": 100}, "dim must be divisible by heads, got dim=100, heads=3"),
    ("vit_tiny", {"patch_size": 3}, "divisible by patch_size=3, got 32x32"),
    ("vit_tiny", {"patch_size": 0}, "patch_size must be positive"),
    ("vit_tiny", {"depth": 0}, "depth must be positive"),
    ("vit_tiny", {"heads": 0}, "heads must be positive"),
    ("vit_tiny", {"mlp_ratio": 0.0}, r"mlp_ratio must give the MLP at least one unit"),
    ("vit_tiny", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ("conv_autoencoder", {"latent_dim": 0}, "latent_dim must be positive"),
])
def test_bad_options(name, options, needle):
    shape = (1, 8, 8) if name in ("mlp", "simple_cnn") else (3, 32, 32)
    with pytest.raises(ValueError, match=f"^{name}: .*{needle}"):
        build(name, 10, shape, **options)


@pytest.mark.parametrize("num_classes", [1, 0, True, 2.5])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build("mlp", num_classes, (1, 8, 8))


@pytest.mark.parametrize("in_shape", [(8, 8), (1, 0, 8), (1, 8, 8, 1)])
def test_bad_in_shape(in_shape):
    with pytest.raises(ValueError, match="in_shape"):
        build("mlp", 10, in_shape)


# Extension points -------------------------------------------------------------------------------

def test_register_model_uses_builder_signature_for_options(monkeypatch):
    monkeypatch.setattr(registry.MODELS, "_entries", dict(registry.MODELS._entries))

    @register_model("tiny", "a test model")
    def tiny(num_classes, in_shape, *, hidden=4):
        return build("mlp", num_classes, in_shape, widths=(hidden,))

    assert ("tiny", "a test model") in list_models()
    assert build("tiny", 3, (1, 2, 2), hidden=5).embed_dim == 5
    with pytest.raises(ValueError, match="tiny: unknown option"):
        build("tiny", 3, (1, 2, 2), widths=(5,))
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny", "again")(tiny)


def test_wrapped_classifier_splits_off_the_last_linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Sequential(nn.Dropout(0.0), nn.Linear(8, 1000)))
    model = WrappedClassifier(net, 5).eval()
    x = torch.randn(2, 3, 16, 16)
    assert model.head.in_features == 8 and model(x).shape == (2, 5)
    torch.testing.assert_close(model(x), model.head(model.embed(x)))
    assert not any(m.out_features == 1000 for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                    reason="torchvision is installed")
def test_torchvision_backbone_without_torchvision_gives_install_hint():
    with pytest.raises(ImportError, match=r"pip install thresher\[vision\]"):
        build("torchvision:resnet18", 10, (3, 32, 32))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="needs torchvision")
def test_torchvision_backbone_satisfies_the_seam():
    model = build("torchvision:resnet18", 10, (3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.embed(x)))
    assert model.embed_dim == 512 and model.num_classes == 10


def test_mlp_takes_feature_vectors_and_image_models_refuse_them():
    probe = build("mlp", 3, (7,), widths=())  # the linear probe of latent-space studies
    x = torch.randn(4, 7)
    assert probe(x).shape == (4, 3) and torch.equal(probe.embed(x), x)
    assert build("mlp", 3, (7,), widths=(5,)).embed_dim == 5
    with pytest.raises(ValueError, match=r"simple_cnn: in_shape must be \(C, H, W\): it takes "
                                         r"images, not feature vectors, got \(7,\)"):
        build("simple_cnn", 3, (7,))
