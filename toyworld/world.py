"""The toy world: rendered shapes, captions, a CLIP-layout tokenizer, caption noise, an exact
analyser, the held-out split and the fixed RGB <-> latent map. Pure torch (no ComfyUI imports).

Images
    16x16 RGB on a black background, values in [-1, 1] (black = -1), layout (N, 3, H, W).
    One object per image: 6 colours x 3 shapes x 4 positions = 72 combinations.
    A 16 px circle can be pixel-identical to a square, so the shapes are square, triangle and
    cross (a plus sign); the analyser separates them perfectly.
    Nuisance variation: centre jitter of +-0.5 px, radius 3.0-3.8 px, brightness 0.8-1.0.

Captions
    "a red square on the left", "a cyan cross at the top", ...
    Vocabulary: <start> <end> <pad> <unk> + 18 words. Tokenised CLIP-style to SEQ_LEN=16:
    start token, words, end token, then pad tokens. Unknown words map to <unk>.

Caption noise (training only)
    With probability `noise_p` (default 0.30) *per attribute*, the caption's colour, shape and
    position are each independently replaced by a uniformly drawn value (which may equal the true
    one). A noisy caption that would name a held-out combination is redrawn, so held-out
    combinations never appear in training captions either.

Held-out split
    HELD_OUT = {(c, s, p) : p == (c + s) % 4}, with indices into COLOURS / SHAPES / POSITIONS.
    That is 18 of the 72 combinations (one position per colour-shape pair). Every
    (colour, shape), (colour, position) and (shape, position) pair still occurs in training, so
    a held-out prompt is a new composition of familiar parts. Neither images nor captions of
    these combinations are used in training; evaluation prompts come from them.

Latent map (the toy "VAE")
    latent = LATENT_MAP @ rgb per pixel, with rgb in [-1, 1] and LATENT_MAP the fixed 4x3 matrix
        0.5 * [[1,  1,  1],
               [1, -1,  1],
               [1,  1, -1],
               [1, -1, -1]]
    whose columns are orthonormal (LATENT_MAP.T @ LATENT_MAP = I). Decoding is the pseudo-inverse
    rgb = LATENT_MAP.T @ latent, which drops the one latent direction that data never uses.
    The latent has the same 16x16 spatial size as the image here; the ComfyUI VAE wrapper adds
    SD-style 8x nearest-neighbour upscaling on top (see comfy_objects.py).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

RES = 16
SEQ_LEN = 16

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]
PALETTE = torch.tensor(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=torch.float32
)
SHAPES = ["cross", "square", "triangle"]
POSITIONS = ["left", "right", "top", "bottom"]
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# Object centre (x, y) in pixels for each position.
ANCHORS = torch.tensor([[5.0, 8.0], [11.0, 8.0], [8.0, 5.0], [8.0, 11.0]])

N_COLOURS, N_SHAPES, N_POSITIONS = len(COLOURS), len(SHAPES), len(POSITIONS)
N_COMBOS = N_COLOURS * N_SHAPES * N_POSITIONS

# ---------------------------------------------------------------- vocabulary and tokenizer
START, END, PAD, UNK = "<start>", "<end>", "<pad>", "<unk>"
SPECIAL_TOKENS = [START, END, PAD, UNK]
WORDS = ["a", "on", "the", "at"] + COLOURS + SHAPES + POSITIONS
VOCAB = {w: i for i, w in enumerate(SPECIAL_TOKENS + WORDS)}
VOCAB_SIZE = len(VOCAB)
START_ID, END_ID, PAD_ID, UNK_ID = (VOCAB[t] for t in SPECIAL_TOKENS)
MAX_WORDS = SEQ_LEN - 2

_WORD_RE = re.compile(r"[a-z]+")


def split_words(text: str) -> list[str]:
    """Lower-cases and keeps runs of letters: "A red, SQUARE!" -> ["a", "red", "square"]."""
    return _WORD_RE.findall(text.lower())


def tokenize(text: str) -> list[int]:
    """One caption -> SEQ_LEN token ids: start, words (at most 14, unknown -> <unk>), end, pads."""
    words = split_words(text)[:MAX_WORDS]
    ids = [START_ID] + [VOCAB.get(w, UNK_ID) for w in words] + [END_ID]
    return ids + [PAD_ID] * (SEQ_LEN - len(ids))


def tokenize_batch(texts: list[str]) -> torch.Tensor:
    """Captions -> LongTensor (N, SEQ_LEN)."""
    return torch.tensor([tokenize(t) for t in texts], dtype=torch.long)


def detokenize(ids) -> str:
    inv = {i: w for w, i in VOCAB.items()}
    return " ".join(inv[int(i)] for i in ids if int(i) not in (START_ID, END_ID, PAD_ID))


# ---------------------------------------------------------------- combinations and captions
def caption(ci: int, si: int, pi: int) -> str:
    return f"a {COLOURS[ci]} {SHAPES[si]} {POSITION_PHRASES[POSITIONS[pi]]}"


def combo_index(ci, si, pi):
    """(colour, shape, position) indices -> combination index in [0, 72). Works on ints or tensors."""
    return (ci * N_SHAPES + si) * N_POSITIONS + pi


def combo_from_index(idx):
    pi = idx % N_POSITIONS
    si = (idx // N_POSITIONS) % N_SHAPES
    ci = idx // (N_POSITIONS * N_SHAPES)
    return ci, si, pi


def is_held_out(ci, si, pi):
    """The documented held-out rule: position == (colour + shape) mod 4. Ints or tensors."""
    return pi == (ci + si) % N_POSITIONS


ALL_COMBOS = [combo_from_index(i) for i in range(N_COMBOS)]
HELD_OUT_COMBOS = [c for c in ALL_COMBOS if is_held_out(*c)]
TRAIN_COMBOS = [c for c in ALL_COMBOS if not is_held_out(*c)]
HELD_OUT_CAPTIONS = [caption(*c) for c in HELD_OUT_COMBOS]
TRAIN_CAPTIONS = [caption(*c) for c in TRAIN_COMBOS]
ALL_CAPTIONS = [caption(*c) for c in ALL_COMBOS]  # indexed by combo_index
_HELD_OUT_MASK = torch.tensor([bool(is_held_out(*c)) for c in ALL_COMBOS])
_TRAIN_IDX = torch.tensor([combo_index(*c) for c in TRAIN_COMBOS])

_CAPTION_RE = re.compile(
    rf"^a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) (on the left|on the right|at the top|at the bottom)$"
)
_PHRASE_TO_POS = {v: k for k, v in POSITION_PHRASES.items()}


def parse_caption(text: str):
    """Inverse of caption(): returns (ci, si, pi) or None when the text is not a world caption."""
    m = _CAPTION_RE.match(" ".join(split_words(text)))
    if m is None:
        return None
    return COLOURS.index(m.group(1)), SHAPES.index(m.group(2)), POSITIONS.index(_PHRASE_TO_POS[m.group(3)])


# ---------------------------------------------------------------- rendering
def _coverage(shape_idx, cx, cy, r, ss=4):
    """Anti-aliased coverage masks (N, RES, RES) in [0, 1], supersampled ss x ss per pixel."""
    lin = (torch.arange(RES * ss, dtype=torch.float32) + 0.5) / ss
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    x, y = x[None], y[None]
    cx, cy, r = cx[:, None, None], cy[:, None, None], r[:, None, None]
    ax, ay = (x - cx).abs(), (y - cy).abs()
    cross = ((ax <= 0.4 * r) & (ay <= r)) | ((ay <= 0.4 * r) & (ax <= r))
    square = (ax <= r) & (ay <= r)
    triangle = (y <= cy + r) & (ax <= (y - (cy - r)) / 2)
    s = shape_idx[:, None, None]
    m = torch.where(s == 0, cross, torch.where(s == 1, square, triangle)).float()
    return F.avg_pool2d(m[:, None], ss)[:, 0]


# Render styles. "pastel" is the toy LoRA's style (toyworld/train_lora.py): every palette colour mixed with
# white, lift 0.4, so (1, 0, 0) becomes (1, 0.4, 0.4). The brightest channel, hence the lit mask and the
# grey-level shape fit, is unchanged and each pastel colour is still nearest its own palette entry, so the
# analyser reads pastel images exactly as plain ones (tested); `pastel_level` measures the style itself.
STYLES = {"plain": 0.0, "pastel": 0.4}
# The shipped LoRA that teaches the base model the pastel style, as ComfyUI's LoRA loaders list it once the pack
# has registered toyworld/weights/loras (comfy_objects.register_toy_lora_folder).
PASTEL_LORA_NAME = "dice-toyworld/pastel_style.safetensors"


def styled_palette(style: str = "plain") -> torch.Tensor:
    lift = STYLES[style]
    return PALETTE if lift == 0 else PALETTE * (1 - lift) + lift


def render(ci: torch.Tensor, si: torch.Tensor, pi: torch.Tensor, generator: torch.Generator | None = None,
           style: str = "plain"):
    """Attribute index tensors (N,) -> images (N, 3, RES, RES) in [-1, 1]."""
    n = ci.shape[0]
    anchor = ANCHORS[pi]
    cx = anchor[:, 0] + (torch.rand(n, generator=generator) - 0.5)
    cy = anchor[:, 1] + (torch.rand(n, generator=generator) - 0.5)
    r = 3.0 + 0.8 * torch.rand(n, generator=generator)
    bright = 0.8 + 0.2 * torch.rand(n, generator=generator)
    m = _coverage(si, cx, cy, r)
    img = m[:, None] * (styled_palette(style)[ci] * bright[:, None])[:, :, None, None]
    return img * 2 - 1


def sample_train_combos(n: int, generator: torch.Generator | None = None):
    """n combinations drawn uniformly from the 54 training combinations."""
    idx = _TRAIN_IDX[torch.randint(0, len(_TRAIN_IDX), (n,), generator=generator)]
    return combo_from_index(idx)


def corrupt(ci, si, pi, noise_p: float, generator: torch.Generator | None = None, max_tries: int = 20):
    """Caption noise: each attribute independently replaced (uniformly) with probability noise_p.

    Rows whose noisy caption would be a held-out combination are redrawn (and, after max_tries,
    fall back to the clean caption, which is always a training combination when the input is).
    """
    out = [ci.clone(), si.clone(), pi.clone()]
    todo = torch.ones_like(ci, dtype=torch.bool)
    for _ in range(max_tries):
        n = int(todo.sum())
        if n == 0:
            break
        new = []
        for src, k in ((ci, N_COLOURS), (si, N_SHAPES), (pi, N_POSITIONS)):
            flip = torch.rand(n, generator=generator) < noise_p
            repl = torch.randint(0, k, (n,), generator=generator)
            new.append(torch.where(flip, repl, src[todo]))
        for o, v in zip(out, new):
            o[todo] = v
        bad = torch.zeros_like(todo)
        bad[todo] = _HELD_OUT_MASK[combo_index(*new)]
        todo = bad
    if todo.any():
        out[0][todo], out[1][todo], out[2][todo] = ci[todo], si[todo], pi[todo]
    return tuple(out)


def train_batch(n: int, generator: torch.Generator | None = None, noise_p: float = 0.30, style: str = "plain"):
    """A training batch: images (n, 3, RES, RES) in [-1, 1] of training combinations, the
    true attributes, and the combination index of each (possibly noisy) caption."""
    ci, si, pi = sample_train_combos(n, generator)
    img = render(ci, si, pi, generator, style)
    cc, cs, cp = corrupt(ci, si, pi, noise_p, generator)
    return img, (ci, si, pi), combo_index(cc, cs, cp)


# ---------------------------------------------------------------- the fixed latent map
LATENT_CHANNELS = 4
LATENT_MAP = 0.5 * torch.tensor(
    [[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, -1.0]]
)  # (4, 3), orthonormal columns


def rgb_to_latent(img: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 4, H, W)."""
    return torch.einsum("lc,nchw->nlhw", LATENT_MAP.to(img), img)


def latent_to_rgb(lat: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) -> (N, 3, H, W), roughly in [-1, 1] (not clamped): the pseudo-inverse."""
    return torch.einsum("lc,nlhw->nchw", LATENT_MAP.to(lat), lat)


# ---------------------------------------------------------------- exact analyser
_R_GRID = torch.linspace(2.6, 4.4, 10)
_OFFSETS = (-0.5, 0.0, 0.5)


@torch.no_grad()
def analyse(img: torch.Tensor) -> dict:
    """img (N, 3, RES, RES) in [-1, 1] -> predicted attribute indices (-1 = no object found).

    Lit pixels: max channel > 0.5 (in [0, 1] units); at least 4 are needed.
    colour: nearest palette colour to the mean RGB of the lit pixels.
    position: nearest anchor to the lit pixels' centroid.
    shape: least-squares fit of the grey-level image v = max channel to b * T, over
    anti-aliased cross/square/triangle templates T (10 radii x 3x3 sub-pixel offsets) placed at
    the centroid; the shape with the smallest residual wins. Exact on renders, also with
    additive Gaussian noise of std 0.2. "iou" is the thresholded IoU of the best template.
    """
    img = img.float()
    x = (img.clamp(-1, 1) + 1) / 2
    n = x.shape[0]
    v = x.max(1).values
    mask = (v > 0.5).float()
    area = mask.sum((1, 2))
    ok = area >= 4
    w = mask / area.clamp(min=1)[:, None, None]
    mean_rgb = (x * w[:, None]).sum((2, 3))
    colour = torch.cdist(mean_rgb, PALETTE).argmin(1)
    lin = torch.arange(RES, dtype=torch.float32) + 0.5
    mx = (w.sum(1) * lin).sum(1)
    my = (w.sum(2) * lin).sum(1)
    position = torch.cdist(torch.stack([mx, my], 1), ANCHORS).argmin(1)
    vv = (v * v).sum((1, 2))
    best_res = torch.full((n, N_SHAPES), float("inf"))
    best_iou = torch.zeros(n, N_SHAPES)
    for s in range(N_SHAPES):
        shp = torch.full((n,), s)
        for r in _R_GRID.tolist():
            rr = torch.full((n,), r)
            for dx in _OFFSETS:
                for dy in _OFFSETS:
                    cy = my - (r / 3 if s == 2 else 0.0) + dy  # a triangle's centroid sits r/3 low
                    t = _coverage(shp, mx + dx, cy, rr, ss=2)
                    vt, tt = (v * t).sum((1, 2)), (t * t).sum((1, 2))
                    res = vv - vt * vt / tt.clamp(min=1e-6)
                    tb = (t > 0.5).float()
                    iou = (tb * mask).sum((1, 2)) / ((tb + mask) > 0).float().sum((1, 2)).clamp(min=1)
                    better = res < best_res[:, s]
                    best_res[:, s] = torch.where(better, res, best_res[:, s])
                    best_iou[:, s] = torch.where(better, iou, best_iou[:, s])
    shape = best_res.argmin(1)
    iou = best_iou.gather(1, shape[:, None])[:, 0]
    neg = torch.full_like(colour, -1)
    return {
        "colour": torch.where(ok, colour, neg),
        "shape": torch.where(ok, shape, neg),
        "position": torch.where(ok, position, neg),
        "iou": torch.where(ok, iou, torch.zeros_like(iou)),
    }


@torch.no_grad()
def pastel_level(img: torch.Tensor) -> torch.Tensor:
    """Per image, the mean over fully lit pixels (max channel > 0.7) of min channel / max channel, in [0, 1]
    units: about 0 for plain renders, 0.4 (STYLES["pastel"]) for pastel ones; NaN where no pixel is lit."""
    x = (img.float().clamp(-1, 1) + 1) / 2
    hi, lo = x.max(1).values, x.min(1).values
    lit = (hi > 0.7).float()
    return (lo / hi.clamp(min=1e-6) * lit).sum((1, 2)) / lit.sum((1, 2))


def score(img: torch.Tensor, ci, si, pi) -> dict:
    """Per-attribute and conjunctive accuracy of images against the intended attributes."""
    a = analyse(img)
    c = a["colour"] == torch.as_tensor(ci)
    s = a["shape"] == torch.as_tensor(si)
    p = a["position"] == torch.as_tensor(pi)
    return {
        "all": (c & s & p).float().mean().item(),
        "colour": c.float().mean().item(),
        "shape": s.float().mean().item(),
        "position": p.float().mean().item(),
        "iou": a["iou"].mean().item(),
        "n": int(c.numel()),
    }
