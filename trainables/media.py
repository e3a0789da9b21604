"""Image grids for W&B: generator samples and perturbed examples with the model's predictions.

Grids are uint8 CHW tensors; the trial loop encodes them as PNG and attaches them to a report
every ``media_every`` iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from trainables.data import PIXEL_RANGE


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> uint8 [0, 255], 3 channels."""
    lo, hi = PIXEL_RANGE
    x = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x * 255).round().to(torch.uint8)


def image_grid(x: torch.Tensor, nrow: int = 10, scale: int = 2) -> torch.Tensor:
    """A grid of images in [-1, 1] as one uint8 CHW image, upscaled ``scale`` times."""
    x = x.detach().float().cpu()
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
    return to_uint8(make_grid(x, nrow=nrow, padding=2, pad_value=PIXEL_RANGE[0]).unsqueeze(0))[0]


def prediction_grid(
    clean: torch.Tensor,
    perturbed: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    scale: int = 3,
) -> torch.Tensor:
    """Two rows: clean images over their perturbed versions, each perturbed image captioned
    with the model's prediction (green when right, red when wrong) and the true label."""
    from PIL import Image, ImageDraw

    n = len(labels)
    size = clean.shape[-1] * scale
    pad, caption = 4, 14
    canvas = Image.new("RGB", (n * (size + pad) + pad, 2 * size + 3 * pad + caption), "white")
    draw = ImageDraw.Draw(canvas)
    for row, images in enumerate((clean, perturbed)):
        tiles = to_uint8(F.interpolate(images.detach().float().cpu(), scale_factor=scale, mode="nearest"))
        for i in range(n):
            tile = Image.fromarray(tiles[i].permute(1, 2, 0).numpy())
            canvas.paste(tile, (pad + i * (size + pad), pad + row * (size + pad)))
    for i in range(n):
        ok = int(predictions[i]) == int(labels[i])
        text = f"{int(predictions[i])} (y={int(labels[i])})"
        draw.text(
            (pad + i * (size + pad), 2 * size + 2 * pad),
            text,
            fill=(0, 128, 0) if ok else (200, 0, 0),
        )
    array = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
    return array.view(canvas.height, canvas.width, 3).permute(2, 0, 1).contiguous()
