"""DeepOBS's TF image pipeline for CIFAR-10/100 and SVHN as batched tensor ops on the data's device (§1.9).

Why our own ops instead of torchvision.transforms: the DeepOBS PyTorch port uses ``Pad(2)``, ``ColorJitter`` and a
per-channel ``Normalize``, which are different transforms; the study ran the TF pipeline, reproduced here op by op
with TF semantics:

* ``resize_image_with_crop_or_pad(36)`` + ``random_crop(32)`` → ``pad_and_crop``: zero-pad 32 → 36 (2 px on each
  side, TF's centred pad), then a 32×32 window at an offset drawn uniformly from {0..4}² per image;
* ``random_flip_left_right`` → ``random_flip_lr``: each image mirrored with probability 1/2 (CIFAR, not SVHN);
* ``random_brightness(max_delta=63/255)`` → ``random_brightness``: + δ, δ ~ U[−63/255, 63/255] per image, added on the
  0–255 scale exactly as DeepOBS does (so it is tiny; §1.9);
* ``random_saturation(0.5, 1.5)`` → ``adjust_saturation``: TF's HSV round trip in closed form (see its docstring);
* ``random_contrast(0.2, 1.8)`` → ``adjust_contrast``: (x − per-channel mean) · f + mean, no clipping (float input);
* ``per_image_standardization`` → same name: (x − mean) / max(std, 1/√N) over all C·H·W values.

The order is TF's: crop, flip, brightness, saturation, contrast, standardisation; evaluation streams (valid, test)
are only cast to float and standardised. Random draws come from an explicit ``torch.Generator`` living on the
data's device, in a fixed order per batch (crop offsets, flips, brightness, saturation, contrast), so a run is
reproducible; TF's own random streams cannot be reproduced. Nothing here syncs with the host.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PAD = 2  # resize_image_with_crop_or_pad(32 → 36): (36 − 32) // 2 on each side
BRIGHTNESS_MAX_DELTA = 63.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
CONTRAST_RANGE = (0.2, 1.8)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def unit_scale(x: Tensor) -> Tensor:
    """uint8 → float32 in [0, 1] (MNIST / Fashion-MNIST: DeepOBS divides by 255, no other preprocessing)."""
    return x.float().div_(255.0)


def per_image_standardization(x: Tensor) -> Tensor:
    """TF ``per_image_standardization``: per image over all C·H·W values, (x − mean) / max(std, 1/√N).

    std is the population std (TF: sqrt(relu(E[x²] − E[x]²))); we compute the same quantity as the mean squared
    deviation, which avoids the cancellation of E[x²] − E[x]² in float32 on the 0–255 scale.
    """
    x = x.float()
    dims = tuple(range(1, x.dim()))
    n = math.prod(x.shape[1:])
    mean = x.mean(dim=dims, keepdim=True)
    std = (x - mean).square().mean(dim=dims, keepdim=True).sqrt()
    return (x - mean) / std.clamp_min(1.0 / math.sqrt(n))


def crop(x: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Per-image ``size``×``size`` windows of NCHW ``x`` at (top[i], left[i]), by two gathers (no Python loop)."""
    b, c, _, w = x.shape
    steps = torch.arange(size, device=x.device)
    rows = (top.view(b, 1) + steps).view(b, 1, size, 1).expand(b, c, size, w)
    cols = (left.view(b, 1) + steps).view(b, 1, 1, size).expand(b, c, size, size)
    return x.gather(2, rows).gather(3, cols)


def pad_and_crop(x: Tensor, generator: torch.Generator, pad: int = PAD) -> Tensor:
    """Zero-pad by ``pad`` on every side, then a random crop back to the input size (works on uint8)."""
    b, _, h, w = x.shape
    if h != w:
        raise ValueError(f"square images expected, got {h}x{w}")
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    return crop(padded, offsets[0], offsets[1], h)


def flip_lr(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror the images where ``mask`` (bool, one per image) is true."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def random_flip_lr(x: Tensor, generator: torch.Generator) -> Tensor:
    """TF ``random_flip_left_right``: each image mirrored when its uniform draw is < 0.5."""
    return flip_lr(x, torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5)


def adjust_brightness(x: Tensor, delta: Tensor) -> Tensor:
    """TF ``adjust_brightness`` on floats: x + δ per image, no clipping."""
    return x + delta.view(-1, 1, 1, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """TF ``adjust_saturation`` (float RGB, NCHW) in closed form, one factor per image.

    TF's kernel converts each pixel to HSV, sets s ← clip(s·f, 0, 1) and converts back, keeping hue h and value
    v = max(r, g, b). With min m, range r = v − m and s = r / v (0 when v ≤ 0), the round trip keeps the maximum and
    the relative position of each channel inside [m, v]; only the chroma changes, to c' = clip(s·f, 0, 1)·v =
    clip(f·r, 0, v) (0 when v ≤ 0). Hence every channel x becomes v − c'·(v − x)/r (and v when r = 0). This is
    exact up to float rounding and, being homogeneous of degree 1, valid on the 0–255 scale DeepOBS uses.
    """
    v = x.amax(dim=1, keepdim=True)
    spread = v - x.amin(dim=1, keepdim=True)
    f = factor.view(-1, 1, 1, 1)
    chroma = torch.minimum((f * spread).clamp_min(0.0), v)
    chroma = torch.where(v > 0, chroma, torch.zeros_like(chroma))
    safe_spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    return v - chroma * (v - x) / safe_spread


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """TF ``adjust_contrast``: per image and channel, (x − mean over H, W) · f + mean; floats are not clipped."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor.view(-1, 1, 1, 1) + mean


def random_brightness(x: Tensor, generator: torch.Generator, max_delta: float = BRIGHTNESS_MAX_DELTA) -> Tensor:
    return adjust_brightness(x, _uniform(x.shape[0], -max_delta, max_delta, generator, x.device))


def random_saturation(x: Tensor, generator: torch.Generator, low: float = SATURATION_RANGE[0],
                      high: float = SATURATION_RANGE[1]) -> Tensor:
    return adjust_saturation(x, _uniform(x.shape[0], low, high, generator, x.device))


def random_contrast(x: Tensor, generator: torch.Generator, low: float = CONTRAST_RANGE[0],
                    high: float = CONTRAST_RANGE[1]) -> Tensor:
    return adjust_contrast(x, _uniform(x.shape[0], low, high, generator, x.device))


def image_pipeline(x_uint8: Tensor, generator: torch.Generator, augment: bool, flip: bool, *,
                   brightness_max_delta: float = BRIGHTNESS_MAX_DELTA) -> Tensor:
    """The whole DeepOBS transform of a CIFAR / SVHN batch: uint8 NCHW → standardised float32 NCHW.

    ``augment`` (train and train_eval streams): crop, [flip], brightness, saturation, contrast, standardisation;
    otherwise standardisation only. ``flip`` is true for CIFAR-10/100 and false for SVHN.
    """
    if not augment:
        return per_image_standardization(x_uint8.float())
    x = pad_and_crop(x_uint8, generator)
    if flip:
        x = random_flip_lr(x, generator)
    x = random_brightness(x.float(), generator, brightness_max_delta)
    x = random_saturation(x, generator)
    x = random_contrast(x, generator)
    return per_image_standardization(x)
