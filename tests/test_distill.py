"""`thresher distill`: the whole study end to end on the offline digits, its early errors, and
the RL selection learning on latents whose good and bad candidates are known."""

import json

import pytest
import torch

from thresher.cli import main
from thresher.studies.distill.config import SelectConfig
from thresher.studies.distill.rl import Latents, rl_select
from thresher.train.probe import ProbeConfig

QUICK = ["--m-per-class", "3", "--ae-epochs", "2", "--proto-steps", "10",
         "--set", "select.rounds=3", "--set", "select.episodes=4",
         "--set", "select.candidates_per_class=6", "--set", "shape.episodes=2",
         "--set", "shape.decisions=2", "--set", "shape.steps_per_decision=3",
         "--set", "pixel_steps=20", "--set", "probe.steps=100"]


def distill(tmp_path, *extra: str) -> int:
    return main(["-q", "distill", "--runs-dir", str(tmp_path), "--dataset", "digits", *extra])


def test_distill_runs_every_method_and_writes_its_outputs(tmp_path, capsys):
    assert distill(tmp_path, "--run-name", "d", *QUICK) == 0
    out = capsys.readouterr().out
    run = tmp_path / "distill" / "d"
    summary = json.loads((run / "summary.json").read_text())
    accs = summary["metrics"]["accuracy"]
    assert set(accs) == {"full", "random", "kmeans", "medoids", "herding", "dm", "protos",
                         "rl_select", "rl_shape"}
    assert all(0.0 <= a[0] <= 1.0 for a in accs.values())
    assert accs["full"][0] > 0.8 and accs["kmeans"][0] > 0.3  # 10 classes: chance is 0.1
    trainings = summary["metrics"]["probe_trainings"]
    assert trainings["rl_select"] == [3 * 4]
    assert trainings["rl_shape"] == [1 + 2 * 2 + 2]  # start, 2 episodes x 2 decisions, greedy
    per_seed = json.loads((run / "per_seed.json").read_text())
    select = next(r for r in per_seed[0]["methods"] if r["method"] == "rl_select")
    assert len(select["curve"]) == 3 and len(select["indices"]) == 30
    assert "random_policy" in select and set(per_seed[0]["pixel"]) >= {"random real images",
                                                                      "decoded protos"}
    artifacts = torch.load(run / "distillation_artifacts-seed0.pt", weights_only=True)
    assert artifacts["methods"]["protos"]["points"].shape == (30, 128)
    for name in ("grid-protos-seed0.png", "grid-rl_select-seed0.png", "embedding-seed0.png",
                 "latents-seed0.pt", "encoder-seed0.pt", "results.txt"):
        assert (run / name).stat().st_size > 0
    assert "Δ vs random" in out and "best non-RL baseline" in out
    assert "rl_select against its random policy at equal compute" in out


@pytest.mark.parametrize("args, needle", [
    (["--m-per-class", "200"], "m_per_class=200 exceeds the pool of class"),
    (["--backbone", "resnet20"], "encoder.backbone 'resnet20'"),
    (["--set", "select.candidates_per_class=3", "--m-per-class", "3"],
     "select.budget_per_class=3 must be smaller than select.candidates_per_class=3"),
    (["--set", "encoder.weights_file=/nonexistent/ae.pt"], "does not exist"),
    (["--methods", "kmeans", "rl_selection"], "did you mean 'rl_select'"),
])
def test_bad_input_is_refused_before_any_run_exists(tmp_path, capsys, args, needle):
    assert distill(tmp_path, "--run-name", "bad", *args) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "distill" / "bad").exists()


def blobs(n_per: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes in 2-D; a quarter of each class's pool sits inside the next class's blob
    (label noise), so some k-means medoids of the pool are bad training points."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])
    y = torch.arange(3).repeat_interleave(n_per)
    home = y.clone()
    noisy = torch.rand(len(y), generator=g) < 0.25
    home[noisy] = (y[noisy] + 1) % 3
    return centres[home] + 0.6 * torch.randn(len(y), 2, generator=g), y


def test_rl_selection_learns_to_avoid_mislabelled_candidates():
    x, y = blobs(200, 0)
    xv, yv = blobs(100, 1)
    clean = torch.Generator().manual_seed(2)
    xt = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]]).repeat_interleave(100, 0)
    xt = xt + 0.6 * torch.randn(300, 2, generator=clean)
    yt = torch.arange(3).repeat_interleave(100)
    data = Latents(x, y, xv, yv, xt, yt, 3)
    out = rl_select(data, budget=1, cfg=SelectConfig(candidates_per_class=8, episodes=16,
                                                     rounds=15),
                    probe=ProbeConfig(steps=100), seed=0)
    assert out.probe_trainings == 16 * 15
    early, late = sum(out.curve[:3]) / 3, sum(out.curve[-3:]) / 3
    assert late > early + 0.05  # the sampled selections improve as the posterior sharpens
    # the kept candidate of each class lies in its own blob
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])
    nearest = torch.cdist(out.points, centres).argmin(1)
    assert torch.equal(nearest, out.labels)


@pytest.mark.parametrize("backbone, options", [("resnet18", "{width: 4}"),
                                               ("vit_tiny", "{dim: 16, depth: 1, heads: 2}")])
def test_another_backbone_encodes_through_the_same_decoder(tmp_path, backbone, options):
    assert distill(tmp_path, "--run-name", "b", "--backbone", backbone, "--set",
                   f"encoder.backbone_options={options}", "--latent-dim", "16",
                   "--methods", "random", "kmeans", "--set", "pixel_check=false",
                   "--m-per-class", "2", "--ae-epochs", "1") == 0
    run = tmp_path / "distill" / "b"
    latents = torch.load(run / "latents-seed0.pt", weights_only=True)
    assert latents["pool"].shape[1] == 16
    assert (run / "grid-kmeans-seed0.png").stat().st_size > 0


def test_a_weights_file_of_another_latent_size_is_refused(tmp_path, capsys):
    from thresher.models.autoencoder import ConvAutoencoder

    path = tmp_path / "ae.pt"
    torch.save(ConvAutoencoder(10, (1, 8, 8), latent_dim=32).state_dict(), path)
    assert distill(tmp_path, "--run-name", "w", "--set", f"encoder.weights_file={path}") == 2
    assert "does not fit encoder.backbone='conv_autoencoder' with latent_dim=128" in \
        capsys.readouterr().err
    assert not (tmp_path / "distill" / "w").exists()
