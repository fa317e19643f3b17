"""Batched data augmentation, applied on the training device.

Each augmentation is `fn(x, generator) -> x` on a float batch (N, C, H, W) of
pixels in [0, 1] (normalisation follows, in `Batches`); `make_augment("flip+crop")`
chains registered ones in order. Every random draw comes from `generator` (on
the CPU, then moved), so a run's augmentations are reproduced by its seed and
resumed with its generator state; the image work itself runs on x's device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DflearnError
from .loader import Augment

AUGMENTATIONS: dict[str, Augment] = {}


def register_augment(name: str):
    def wrap(fn: Augment) -> Augment:
        AUGMENTATIONS[name] = fn
        return fn
    return wrap


@register_augment("flip")
def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (the LAS paper's augmentation)."""
    flip = torch.rand(len(x), generator=generator).to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _rand(generator, *shape, device) -> torch.Tensor:
    return torch.rand(*shape, generator=generator).to(device)


def _randint(generator, high, *shape, device) -> torch.Tensor:
    return torch.randint(high, shape, generator=generator).to(device)


@register_augment("crop")
def random_crop(x: torch.Tensor, generator: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Pad each side by `pad` black pixels, then crop back to H x W at a random offset per image."""
    N, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = _randint(generator, 2 * pad + 1, 2, N, device=x.device)
    rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]
    return padded[torch.arange(N, device=x.device)[:, None, None, None],
                  torch.arange(C, device=x.device)[None, :, None, None], rows, cols]


@register_augment("cutout")
def cutout(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): one square of side H/2 (16 on CIFAR) per image,
    centred anywhere (clipped at the border), filled with the batch's channel mean,
    which is ~0 after normalisation as in the original (applied after Normalize)."""
    N, C, H, W = x.shape
    side = H // 2
    cy, cx = (_rand(generator, 2, N, device=x.device) * torch.tensor([[H], [W]], device=x.device)).long()
    ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    inside = lambda c, v: ((v >= c[:, None] - side // 2) & (v < c[:, None] + side - side // 2))  # noqa: E731
    box = inside(cy, ys)[:, None, :, None] & inside(cx, xs)[:, None, None, :]
    return torch.where(box, x.mean(dim=(0, 2, 3), keepdim=True), x)


# RandAugment (Cubuk et al. 2020) as torchvision defines it: 2 ops per image drawn
# from 14, at magnitude 9 of 30; signed ops take a random sign per image.
RANDAUGMENT_OPS, RANDAUGMENT_MAGNITUDE = 2, 9 / 30


def _grey(x):
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend(degenerate, x, s):  # PIL ImageEnhance: factor 1 + 0.9 s
    return (degenerate + (1 + 0.9 * s).view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 1)


def _affine(x, s, a, b, c, d, tx, ty):
    """Sample x through a per-image affine map (normalised coordinates), black outside."""
    theta = torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _sharpness(x, s):
    k = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], device=x.device) / 13
    smooth = F.conv2d(x, k.expand(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])
    smooth[..., [0, -1], :], smooth[..., :, [0, -1]] = x[..., [0, -1], :], x[..., :, [0, -1]]  # PIL keeps borders
    return _blend(smooth, x, s)


def _autocontrast(x, s):
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def _equalize(x, s):
    N, C, H, W = x.shape
    v = (x * 255).round().long().view(N, C, -1)
    hist = torch.zeros(N, C, 256, device=x.device).scatter_add_(2, v, torch.ones_like(v, dtype=x.dtype))
    cdf = hist.cumsum(-1)
    low = cdf.gather(2, v.amin(-1, keepdim=True))  # count up to the darkest value present
    lut = ((cdf - low) / (H * W - low).clamp_min(1)).clamp(0, 1)
    return lut.gather(2, v).view_as(x)


def _posterize(x, s, bits: int = 8 - round(RANDAUGMENT_MAGNITUDE * 4)):
    step = 2 ** (8 - bits)
    return torch.div((x * 255).round(), step, rounding_mode="floor") * step / 255


def _zero(s):
    return torch.zeros_like(s)


def _one(s):
    return torch.ones_like(s)


RANDAUGMENT = {
    "identity": lambda x, s: x,
    "shear_x": lambda x, s: _affine(x, s, _one(s), 0.3 * s, _zero(s), _one(s), _zero(s), _zero(s)),
    "shear_y": lambda x, s: _affine(x, s, _one(s), _zero(s), 0.3 * s, _one(s), _zero(s), _zero(s)),
    # torchvision: up to 150/331 of the side; 2x that in normalised coordinates
    "translate_x": lambda x, s: _affine(x, s, _one(s), _zero(s), _zero(s), _one(s), 2 * 150 / 331 * s, _zero(s)),
    "translate_y": lambda x, s: _affine(x, s, _one(s), _zero(s), _zero(s), _one(s), _zero(s), 2 * 150 / 331 * s),
    "rotate": lambda x, s: _affine(x, s, torch.cos(s * math.pi / 6), -torch.sin(s * math.pi / 6),
                                   torch.sin(s * math.pi / 6), torch.cos(s * math.pi / 6), _zero(s), _zero(s)),
    "brightness": lambda x, s: _blend(torch.zeros_like(x), x, s),
    "color": lambda x, s: _blend(_grey(x), x, s),
    "contrast": lambda x, s: _blend(_grey(x).mean(dim=(1, 2, 3), keepdim=True), x, s),
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": lambda x, s: torch.where(x < 1 - RANDAUGMENT_MAGNITUDE, x, 1 - x),
    "autocontrast": _autocontrast,
    "equalize": _equalize,
}


@register_augment("randaugment")
def randaugment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """RandAugment, N=2, M=9: each image gets its own 2 ops; the images that drew
    the same op are transformed together, so the cost is one batched call per op."""
    ops = list(RANDAUGMENT.values())
    for _ in range(RANDAUGMENT_OPS):
        choice = _randint(generator, len(ops), len(x), device=x.device)
        sign = _randint(generator, 2, len(x), device=x.device) * 2 - 1
        strength = sign.to(x.dtype) * RANDAUGMENT_MAGNITUDE
        out = x.clone()
        for k, op in enumerate(ops):
            idx = (choice == k).nonzero().squeeze(1)
            if len(idx):
                out[idx] = op(x[idx], strength[idx])
        x = out
    return x


def make_augment(spec: str | None) -> Augment | None:
    """'flip', 'flip+crop', ... -> one function applying them in order; None/'none' -> None."""
    if not spec or spec == "none":
        return None
    names = spec.split("+")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise DflearnError(f"unknown augmentation '{unknown[0]}'; choose from: {', '.join(sorted(AUGMENTATIONS))} "
                           f"(combine with '+', e.g. flip+crop)")
    fns = [AUGMENTATIONS[n] for n in names]
    if len(fns) == 1:
        return fns[0]

    def chain(x, generator):
        for fn in fns:
            x = fn(x, generator)
        return x
    return chain
