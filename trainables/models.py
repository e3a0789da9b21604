"""Every network of the project, sized from the dataset's channels and classes.

- :class:`ClassicClassifier`: seed 000's Classic Classifier (also the Robust Classifier's and
  the adaptive-ratio classifier's architecture, the default of every trainable).
- :class:`SmallCNN`: TRADES' 4-conv MNIST network, the other choice of ``classifier``.
- :class:`Critic`: the WGAN-GP critic (seed 000), with an optional class projection.
- :class:`Generator`: the conditional WGAN-GP generator (seed 000).
- :class:`PerturbationGenerator`: seed 001's generator of bounded perturbations.

All images are 32x32 in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import PIXEL_RANGE, to_model_scale


def folded(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` that computes the same function for attacking it: batch
    norms folded into the convolutions and linear layers before them (``torch.fx``; a model fx
    cannot trace is copied as it is) and weights that need no gradient (attacks ask only for the
    input's), in the memory format the model had. About 1.5 times as fast a forward pass and 1.6
    times as fast a forward and backward pass on CPU (``benchmarks/throughput.py``)."""
    import contextlib
    import copy

    from torch.fx.experimental.optimization import fuse

    if getattr(model, "is_folded", False):
        return model
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    last = bool(convs) and convs[0].is_contiguous(memory_format=torch.channels_last)
    copied = copy.deepcopy(model).eval()
    with contextlib.suppress(Exception):  # a model fx cannot trace is attacked unfolded
        copied = fuse(copied)
    for p in copied.parameters():
        p.requires_grad_(False)
    copied.is_folded = True
    return copied.to(memory_format=torch.channels_last) if last else copied


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases (seed 000 switched to Xavier initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ClassicClassifier(nn.Module):
    """Two 3x3 convs of 32 channels (BatchNorm + ReLU), 2x2 max-pool, FC 128 (BatchNorm +
    ReLU), FC to the class logits."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(width * 16 * 16, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(hidden, num_classes)
        xavier_init(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d penultimate features (used for the Frechet distance of samples)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """TRADES' SmallCNN (Zhang et al. 2019, MNIST): 3x3 convs of ``width``, ``width``, 2 x
    ``width``, 2 x ``width`` channels without padding (ReLU; a 2x2 max-pool after each pair),
    FC 200, dropout 0.5, FC 200, FC to the class logits; ``width`` 32 is the published network."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32, size: int = 32):
        super().__init__()
        w2, side = 2 * width, ((size - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, w2, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(w2, w2, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(w2 * side * side, 200),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(200, 200),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(200, num_classes)
        xavier_init(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 200-d penultimate features."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


#: Classifier architectures by the name a config gives (``classifier``) and the name an export's
#: metadata gives (``architecture``).
CLASSIFIERS = {"classic": ClassicClassifier, "smallcnn": SmallCNN}
ARCHITECTURES = {cls.__name__: name for name, cls in CLASSIFIERS.items()}


def make_classifier(name: str, channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """A classifier of architecture ``name`` (a key of :data:`CLASSIFIERS` or a class name)."""
    cls = CLASSIFIERS.get(name) or CLASSIFIERS.get(ARCHITECTURES.get(name, ""))
    if cls is None:
        raise ValueError(f"unknown architecture {name!r}")
    return cls(channels, num_classes, width=width)


class Critic(nn.Module):
    """WGAN-GP critic: 4x4 stride-2 convs to 64x16x16, 128x8x8, 256x4x4, 512x2x2, LeakyReLU(0.2),
    no BatchNorm (it would break the per-sample gradient penalty), linear to one value.

    With ``num_classes`` the critic is conditional through a projection term
    ``<embed(y), h>`` (Miyato & Koyama, 2018): without it nothing ties the generator's images to
    their conditioning labels, and the classifier trained on those labels would learn noise.
    """

    def __init__(self, channels: int = 1, num_classes: int | None = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for c_out in (64, 128, 256, 512):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(512 * 2 * 2, 1)
        self.embed = nn.Embedding(num_classes, 512 * 2 * 2) if num_classes else None
        xavier_init(self)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.out(h).squeeze(1)
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


class PixelNorm(nn.Module):
    """Scale each pixel's feature vector to unit RMS over channels (Karras et al., 2018).

    Not BatchNorm: it mixes no samples, so the generator stays a per-sample function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Generator(nn.Module):
    """Conditional generator: [z, one-hot(y)] -> FC 8192 (512x4x4) -> transposed convs to
    256x8x8, 128x16x16, 64x32x32 -> 3x3 conv to the image; ReLU inside, tanh out, no BatchNorm.

    Pixelwise feature normalisation follows the FC layer and each hidden transposed conv. Without
    it this wide generator died in the reproduction run (real MNIST, the seed's settings: Adam
    1e-4, betas (0.5, 0.9), n_critic 5): the output layer's pre-activations fell by ~0.1 per
    generator step until the tanh saturated at -1 everywhere after ~80 steps (all-black samples,
    zero gradient, no recovery in 1,200 steps). The likely driver is the padded border, exactly
    -1 in every real image, pulling shared output filters ever darker. With the normalisation the
    Wasserstein estimate falls steadily and only about half of the pixels (the background)
    saturate, as they should.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, latent_dim: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.fc = nn.Linear(latent_dim + num_classes, 512 * 4 * 4)
        layers: list[nn.Module] = [PixelNorm(), nn.ReLU(inplace=True)]
        for c_in, c_out in ((512, 256), (256, 128), (128, 64)):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                PixelNorm(),
                nn.ReLU(inplace=True),
            ]
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(64, channels, 3, stride=1, padding=1), nn.Tanh())
        xavier_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1))
        return self.net(h.view(-1, 512, 4, 4))


class PerturbationGenerator(nn.Module):
    """Seed 001's generator: image -> perturbation with |delta|_inf <= eps -> clipped image.

    A small encoder-decoder (32x32 -> 16x16 -> 32x32) predicts a raw map; ``eps * tanh(raw)``
    bounds it, and the perturbed image is clipped to the valid pixel range. ``eps`` is on the
    [0, 1] pixel scale. No BatchNorm, so train and eval mode compute the same function.
    """

    def __init__(self, channels: int = 1, eps: float = 0.3, width: int = 32):
        super().__init__()
        if not 0 < eps <= 1:
            raise ValueError(f"eps={eps} must be in (0, 1] on the [0, 1] pixel scale")
        self.eps = eps
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        xavier_init(self)

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        return to_model_scale(self.eps) * torch.tanh(self.net(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = PIXEL_RANGE
        return (x + self.perturbation(x)).clamp(lo, hi)


class GradientAttacker(nn.Module):
    """A learned attacker (Jang, Wu & Jha, ICCV 2019): a recursive generator that sees the
    classifier's input gradient.

    At each of ``steps`` recursive steps it receives the image, the classifier's input gradient
    at the current adversarial image (normalised to unit RMS per image and channel), the
    perturbation so far (divided by eps, so in [-1, 1]) and a latent code ``z``; it proposes a
    direction in [-1, 1] per pixel that moves the perturbation by at most
    ``step_size * eps``, after which the perturbation is projected onto the eps ball and the
    image onto the valid pixel range (:func:`trainables.attacks.learned_attack_steps`). ``eps``
    is on the [0, 1] pixel scale; ``step_size`` is a fraction of eps.

    The network is a small U-Net (32x32 -> 16x16 -> 32x32 with a skip) whose input and
    bottleneck also receive the encoded latent code, tiled over the image, so that different
    codes can propose different attacks (the diversity term of the training loss rewards
    that). No BatchNorm: the attacker is a per-example function in train and eval mode alike.
    """

    def __init__(
        self,
        channels: int = 1,
        eps: float = 0.3,
        steps: int = 10,
        step_size: float = 0.25,
        latent_dim: int = 8,
        width: int = 8,
        gradient_skip: bool = True,
    ):
        super().__init__()
        if not 0 < eps <= 1:
            raise ValueError(f"eps={eps} must be in (0, 1] on the [0, 1] pixel scale")
        if not 1 <= steps <= 10:
            raise ValueError(f"steps={steps} must be in [1, 10]")
        if not 0 < step_size <= 1:
            raise ValueError(f"step_size={step_size} must be in (0, 1] (a fraction of eps)")
        self.eps, self.steps, self.step_size, self.latent_dim = eps, steps, step_size, latent_dim
        self.z_encoder = nn.Sequential(
            nn.Linear(latent_dim, latent_dim), nn.ReLU(), nn.Linear(latent_dim, latent_dim), nn.ReLU()
        )
        self.inp = nn.Sequential(nn.Conv2d(3 * channels + latent_dim, width, 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.mid = nn.Sequential(
            nn.Conv2d(2 * width + latent_dim, 2 * width, 3, padding=1), nn.LeakyReLU(0.2)
        )
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU())
        self.out = nn.Conv2d(2 * width, channels, 3, padding=1)
        xavier_init(self)
        self.gradient_skip = gradient_skip
        if gradient_skip:
            # Start as a (soft) signed-gradient step, like a PGD step, and learn what to add.
            self.grad_gain = nn.Parameter(torch.tensor(3.0))
            nn.init.zeros_(self.out.weight)

    def sample_latent(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    @staticmethod
    def _tile(code: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return code[:, :, None, None].expand(-1, -1, *like.shape[-2:]).to(like.dtype)

    def direction(
        self, x: torch.Tensor, grad: torch.Tensor, delta: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """One step's direction in [-1, 1] from the image, the normalised input gradient, the
        perturbation so far (model units) and the latent code."""
        code = self.z_encoder(z)
        scaled = delta / to_model_scale(self.eps)
        h0 = self.inp(torch.cat([x, grad, scaled, self._tile(code, x)], dim=1))
        h1 = self.down(h0)
        h1 = self.mid(torch.cat([h1, self._tile(code, h1)], dim=1))
        raw = self.out(torch.cat([self.up(h1), h0], dim=1))
        if self.gradient_skip:
            raw = raw + self.grad_gain * grad
        return torch.tanh(raw)
