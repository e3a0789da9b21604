import pytest
import torch

from trainables.models import (
    ClassicClassifier,
    Critic,
    Generator,
    PerturbationGenerator,
    PixelNorm,
    make_classifier,
)


@pytest.mark.parametrize("channels,classes", [(1, 10), (3, 43)])
def test_classifier_shapes(channels, classes):
    model = ClassicClassifier(channels, classes)
    x = torch.randn(4, channels, 32, 32)
    assert model(x).shape == (4, classes)
    assert model.embed(x).shape == (4, 128)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32] and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 1


@pytest.mark.parametrize("conditional", [True, False])
def test_critic_shapes_and_no_batchnorm(conditional):
    critic = Critic(3, 43 if conditional else None)
    out = critic(torch.randn(5, 3, 32, 32), torch.randint(0, 43, (5,)))
    assert out.shape == (5,)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]


@pytest.mark.parametrize("channels,classes", [(1, 10), (3, 43)])
def test_generator_shapes_and_range(channels, classes):
    gen = Generator(channels, classes, latent_dim=16)
    assert gen.fc.out_features == 8192
    img = gen(torch.randn(6, 16), torch.arange(6))
    assert img.shape == (6, channels, 32, 32)
    assert img.min() >= -1 and img.max() <= 1
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in gen.modules())


def test_generator_features_are_normalised_per_sample():
    """PixelNorm bounds every hidden feature map (unit RMS over channels) and mixes no samples:
    an image does not depend on the rest of its batch."""
    gen = Generator(1, 10, latent_dim=16)
    z, y = torch.randn(5, 16), torch.arange(5)
    seen = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))
        for m in gen.modules()
        if isinstance(m, PixelNorm)
    ]
    with torch.no_grad():
        batch = gen(z, y)
        single = gen(z[2:3], y[2:3])
    for h in hooks:
        h.remove()
    assert len(seen) == 8  # four normalised layers, two forward passes
    for out in seen:
        rms = out.pow(2).mean(dim=1).sqrt()
        assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)
    assert torch.allclose(batch[2:3], single, atol=1e-5)


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_perturbation_generator_is_bounded(eps):
    gen = PerturbationGenerator(1, eps=eps)
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(50)  # saturate tanh: the bound must still hold
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    out = gen(x)
    assert out.shape == x.shape
    assert (out - x).abs().max() <= 2 * eps + 1e-6  # eps on [0,1] is 2*eps in [-1,1] units
    assert out.min() >= -1 and out.max() <= 1


def test_perturbation_generator_rejects_bad_eps():
    with pytest.raises(ValueError):
        PerturbationGenerator(1, eps=0.0)


@pytest.mark.parametrize("architecture", ["classic", "smallcnn", "ClassicClassifier", "SmallCNN"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_at_every_width_gives_logits_and_embeddings(architecture, channels):
    sizes = []
    for width in (8, 16):
        model = make_classifier(architecture, channels, 43, width=width).eval()
        x = torch.randn(3, channels, 32, 32)
        assert model(x).shape == (3, 43)
        assert model.embed(x).shape[0] == 3
        sizes.append(sum(p.numel() for p in model.parameters()))
    assert sizes[1] > sizes[0]  # width is capacity


def test_smallcnn_at_width_32_is_trades_network():
    convs = [m for m in make_classifier("smallcnn", 1, 10).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 32, 64, 64]
    assert all(m.padding == (0, 0) and m.kernel_size == (3, 3) for m in convs)
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        make_classifier("resnet", 1, 10)
