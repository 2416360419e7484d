"""Small charts as ComfyUI IMAGE tensors (1, H, W, 3 in [0, 1]); Pillow comes with ComfyUI."""

from __future__ import annotations

import math

import numpy as np
import torch


def _canvas(width: int, height: int):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), "white")
    return img, ImageDraw.Draw(img), ImageFont.load_default()


def _to_image(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def loss_curve_image(losses: list[float], title: str = "DICE distillation loss", width: int = 640, height: int = 360) -> torch.Tensor:
    """Raw loss (light) and its moving average (dark) against the step, log-scaled when it spans a decade."""
    img, draw, font = _canvas(width, height)
    left, right, top, bottom = 60, 16, 28, 36
    draw.text((left, 8), title, fill="black", font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    vals = [v for v in losses if math.isfinite(v) and v > 0]
    if len(vals) < 2:
        draw.text((left + 10, height // 2), "not enough steps to plot", fill="gray", font=font)
        return _to_image(img)
    arr = np.asarray(vals, dtype=np.float64)
    window = max(1, len(arr) // 50)
    smooth = np.convolve(arr, np.ones(window) / window, mode="valid")
    log = arr.max() / arr.min() > 10
    f = np.log10 if log else (lambda a: a)
    lo, hi = float(f(arr.min())), float(f(arr.max()))
    span = hi - lo or 1.0
    w, h = width - left - right, height - top - bottom

    def pts(series, offset):
        n = len(arr) - 1
        return [(left + (i + offset) / n * w, top + (hi - float(f(v))) / span * h) for i, v in enumerate(series)]

    draw.line(pts(arr, 0), fill=(170, 190, 230), width=1)
    draw.line(pts(smooth, (window - 1) / 2), fill=(20, 60, 170), width=2)
    for frac in (0.0, 0.5, 1.0):
        v = hi - frac * span
        label = f"{10 ** v:.3g}" if log else f"{v:.3g}"
        y = top + frac * h
        draw.text((4, y - 6), label, fill="black", font=font)
    draw.text((left, height - bottom + 6), "step 0", fill="black", font=font)
    draw.text((width - right - 60, height - bottom + 6), f"step {len(arr)}", fill="black", font=font)
    draw.text((width - right - 200, 8), f"last {smooth[-1]:.4g} (first {smooth[0]:.4g})", fill="black", font=font)
    return _to_image(img)


def token_bar_image(
    values: torch.Tensor, labels: list[str] | None = None, title: str = "mean |c' - c| per token", width: int = 640, height: int = 300
) -> torch.Tensor:
    """Bars per token position, coloured by the group label (start, word, end, pad) when given."""
    img, draw, font = _canvas(width, height)
    left, right, top, bottom = 50, 12, 28, 40
    draw.text((left, 8), title, fill="black", font=font)
    vals = values.detach().float().cpu().numpy()
    n = len(vals)
    vmax = float(vals.max()) if n and vals.max() > 0 else 1.0
    w, h = width - left - right, height - top - bottom
    palette = {"start": (120, 120, 120), "word": (30, 110, 200), "token": (30, 110, 200), "end": (220, 120, 20), "pad": (60, 160, 80)}
    bw = w / max(n, 1)
    for i, v in enumerate(vals):
        x0 = left + i * bw
        y0 = top + h - (v / vmax) * h
        colour = palette.get(labels[i], (30, 110, 200)) if labels else (30, 110, 200)
        draw.rectangle([x0 + bw * 0.1, y0, x0 + bw * 0.9, top + h], fill=colour)
    draw.line([left, top + h, left + w, top + h], fill="black")
    draw.text((4, top - 6), f"{vmax:.3g}", fill="black", font=font)
    draw.text((4, top + h - 6), "0", fill="black", font=font)
    draw.text((left, top + h + 6), "token 0", fill="black", font=font)
    draw.text((left + w - 60, top + h + 6), f"token {n - 1}", fill="black", font=font)
    if labels:
        x = left + 120
        for name, colour in palette.items():
            if name in labels:
                draw.rectangle([x, top + h + 22, x + 10, top + h + 32], fill=colour)
                draw.text((x + 14, top + h + 21), name, fill="black", font=font)
                x += 70
    return _to_image(img)
