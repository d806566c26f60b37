"""Convolutional VAE: shapes, the ELBO's two terms against references, metrics, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from thresher.models import ConvVAE, build, list_models, model_options
from thresher.models.vae import vae_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"channels": (16,), "hidden": 32, "latent_dim": 4}  # 1x8x8, cheap


def small_vae(seed: int = 0, **options) -> ConvVAE:
    torch.manual_seed(seed)
    return build("conv_vae", 10, (1, 8, 8), **{**SMALL, **options})


def bars() -> torch.Tensor:
    """16 uint8 8x8 images: each of the 8 rows, then each of the 8 columns, lit."""
    images = torch.zeros(16, 1, 8, 8, dtype=torch.uint8)
    for i in range(8):
        images[i, 0, i, :] = 255
        images[8 + i, 0, :, i] = 255
    return images


def spread_posterior(model: ConvVAE, seed: int = 1) -> None:
    """Random-init mu and logvar sit near 0; give them a spread so the terms are not tiny."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.posterior.bias.copy_(1.5 * torch.randn(model.posterior.bias.shape, generator=gen))


# Shapes and the classifier seam -----------------------------------------------------------------

@pytest.mark.parametrize("shape,options", [((1, 28, 28), {}), ((3, 32, 32), {}),
                                           ((1, 8, 8), {"channels": (16,)}),
                                           ((3, 27, 20), {"latent_dim": 5})])
def test_shapes_round_trip_and_seam(shape, options):
    torch.manual_seed(0)
    model = build("conv_vae", 7, shape, **options).eval()
    latent = options.get("latent_dim", 16)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (3, latent)
        assert model.decode(mu).shape == x.shape  # odd sizes come back exactly
        assert model.terms(x).shape == (3, 2)
        torch.testing.assert_close(model.embed(x), mu, rtol=0, atol=0)
        logits = model(x)
    assert logits.shape == (3, 7) and model.num_classes == 7
    assert model.embed_dim == latent
    torch.testing.assert_close(logits, model.head(mu), rtol=0, atol=1e-6)


def test_build_through_the_registry():
    model = build("conv_vae", 10, (1, 28, 28))
    assert isinstance(model, ConvVAE)
    assert model.embed_dim == 16
    assert "conv_vae" in [info.name for info in list_models()]
    assert model_options("conv_vae") == {"latent_dim": 16, "channels": (32, 64), "hidden": 256}
    # encoder: 28 -> 14 -> 7, so the hidden layer reads 64 * 7 * 7 features
    assert model.encoder[-2].in_features == 64 * 7 * 7
    assert model.posterior.out_features == 2 * 16


def test_every_parameter_gets_a_gradient_from_elbo_and_probe():
    model = small_vae()
    x = torch.rand(4, 1, 8, 8)
    loss = model.terms(x).sum() + nn.functional.cross_entropy(model(x), torch.arange(4))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not dead


# The two terms ----------------------------------------------------------------------------------

def test_reparameterize_by_hand():
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[math.log(4.0), 0.0]])
    z = ConvVAE.reparameterize(mu, logvar, torch.tensor([[0.5, 3.0]]))
    torch.testing.assert_close(z, torch.tensor([[1.0 + 2.0 * 0.5, -2.0 + 3.0]]))


def test_kl_column_matches_torch_distributions():
    model = small_vae().eval()
    spread_posterior(model)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        kl = model.terms(x)[:, 1]
    assert logvar.std() > 0.5  # a test of exp(logvar), not of logvar ~ 0
    q = Normal(mu.double(), logvar.double().mul(0.5).exp())
    expected = kl_divergence(q, Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl.double(), expected, rtol=1e-5, atol=1e-6)


def test_reconstruction_column_is_a_bce_sum_at_the_given_noise():
    model = small_vae().eval()
    spread_posterior(model)
    x = torch.rand(5, 1, 8, 8)
    noise = torch.randn(5, 4)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        logits = model.decode(mu + torch.exp(logvar / 2) * noise).double()
        recon = model.terms(x, noise)[:, 0]
        other = model.terms(x, torch.randn(5, 4))
    p, t = torch.sigmoid(logits), x.double()
    expected = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum((1, 2, 3))
    torch.testing.assert_close(recon.double(), expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(other[:, 0], recon)  # the noise is used ...
    torch.testing.assert_close(other[:, 1], model.terms(x, noise)[:, 1].detach())  # ... not by KL


def test_noise_defaults_to_the_global_generator():
    model = small_vae().eval()
    spread_posterior(model)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(7)
        drawn = model.terms(x)
        torch.manual_seed(7)
        given = model.terms(x, torch.randn(3, 4))
    torch.testing.assert_close(drawn, given, rtol=0, atol=0)


@pytest.mark.parametrize("mu,logvar,kl", [
    ((0.0, 0.0), (0.0, 0.0), 0.0),  # the prior itself: exactly zero
    ((1.0, 0.0), (0.0, math.log(2.0)), 0.5 * 1.0 + 0.5 * (2.0 - 1.0 - math.log(2.0))),
    ((0.0, -3.0), (math.log(0.25), 0.0), 0.5 * (0.25 - 1 - math.log(0.25)) + 0.5 * 9.0),
])
def test_kl_by_hand_through_a_fixed_final_encoder_layer(mu, logvar, kl):
    model = small_vae(latent_dim=2).eval()
    with torch.no_grad():
        model.posterior.weight.zero_()
        model.posterior.bias.copy_(torch.tensor([*mu, *logvar]))
        x = torch.rand(3, 1, 8, 8)
        noise = torch.randn(3, 2)
        terms = model.terms(x, noise)
        logits = model.decode(torch.tensor(mu) + torch.exp(torch.tensor(logvar) / 2) * noise)
    if kl == 0.0:
        assert torch.equal(terms[:, 1], torch.zeros(3))
    torch.testing.assert_close(terms[:, 1], torch.full((3,), kl), rtol=1e-6, atol=1e-6)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    torch.testing.assert_close(terms[:, 0], bce.sum((1, 2, 3)))


def test_terms_are_computed_in_float32_under_autocast():
    model = small_vae(latent_dim=16)
    spread_posterior(model)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mu, logvar = model.encode(x)
        assert mu.dtype == torch.bfloat16 and model.decode(mu).dtype == torch.bfloat16
        terms = model.terms(x)
    assert terms.dtype == torch.float32
    assert (terms >= 0).all()
    # the KL of those bf16 statistics, summed in float32 rather than rounded to bf16 (~3 digits)
    mu, logvar = mu.double(), logvar.double()
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
    torch.testing.assert_close(terms[:, 1].double(), kl, rtol=1e-5, atol=0)


# Metrics ----------------------------------------------------------------------------------------

def test_metrics_are_the_mean_terms_at_one_sample_per_image():
    model = small_vae()
    spread_posterior(model)
    images = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    got = vae_metrics(model, images, batch_size=3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        noise = torch.randn(7, 4, generator=torch.Generator().manual_seed(4))
        recon, kl = model.terms(images.float() / 255, noise).double().mean(0).tolist()
    assert got["n"] == 7
    assert got["recon_nats"] == pytest.approx(recon, rel=1e-6)
    assert got["kl_nats"] == pytest.approx(kl, rel=1e-6)
    assert got["neg_elbo_nats"] == pytest.approx(got["recon_nats"] + got["kl_nats"],
                                                 rel=1e-12)
    assert got["elbo_nats"] == -got["neg_elbo_nats"] < 0
    assert got["bits_per_dim"] == pytest.approx(got["neg_elbo_nats"] / (64 * math.log(2)),
                                                rel=1e-12)
    assert all(isinstance(v, float) for k, v in got.items() if k != "n")


def test_metrics_are_deterministic_and_leave_rng_and_mode_alone():
    model = small_vae()
    spread_posterior(model)
    images = bars()
    rng = torch.get_rng_state()
    first = vae_metrics(model, images)  # default: a fresh generator seeded 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training  # put back in train mode ...
    assert vae_metrics(model.eval(), images, batch_size=5) == pytest.approx(first, rel=1e-6)
    assert not model.training  # ... and left in eval mode
    seeded = vae_metrics(model, images, generator=torch.Generator().manual_seed(0))
    assert seeded == first
    other = vae_metrics(model, images, generator=torch.Generator().manual_seed(1))
    assert other["recon_nats"] != first["recon_nats"]
    assert other["kl_nats"] == pytest.approx(first["kl_nats"])  # KL does not use the sample


def test_metrics_reject_float_images():
    with pytest.raises(ValueError, match=r"uint8 tensor \[N, C, H, W\], got torch.float32"):
        vae_metrics(small_vae(), torch.rand(2, 1, 8, 8))


# Learning ---------------------------------------------------------------------------------------

def test_training_lowers_the_negative_elbo_below_the_pixel_marginals():
    """Learning only the pixel marginals (1/8 lit) gives 64 H(1/8) = 24.1 nats; beating it
    clearly needs the latent code, i.e. a positive KL."""
    model = small_vae(hidden=64)
    images = bars()
    x = images.float() / 255
    before = vae_metrics(model, images)["neg_elbo_nats"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = model.terms(x).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = vae_metrics(model, images)
    marginals = 64 * -(1 / 8 * math.log(1 / 8) + 7 / 8 * math.log(7 / 8))
    assert before > 40  # ~64 ln 2 from logits near 0
    assert after["neg_elbo_nats"] < 0.8 * marginals
    assert after["kl_nats"] > 1.0


# Errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,options,needle", [
    ((1, 2, 2), {}, "inputs of 2x2 are too small for 2 stride-2 stages: need at least 4x4"),
    ((1, 28, 3), {}, "inputs of 28x3 are too small"),
    ((1, 4, 4), {"channels": (8, 8, 8)}, "inputs of 4x4 are too small for 3 .* at least 8x8"),
    ((1, 8, 8), {"latent_dim": 0}, "latent_dim must be positive"),
    ((1, 8, 8), {"hidden": 0}, "hidden must be positive"),
    ((1, 8, 8), {"channels": ()}, "channels must not be empty"),
])
def test_bad_shapes_and_options(shape, options, needle):
    with pytest.raises(ValueError, match=f"^conv_vae: .*{needle}"):
        build("conv_vae", 10, shape, **options)
