"""A small frozen CLIP-like text encoder for the toy world. Pure torch (no ComfyUI imports).

Token embedding + learned-style positional embedding, `layers` pre-LayerNorm causal transformer
blocks (multi-head self-attention, GELU MLP), and a final LayerNorm, like CLIP's text tower.
Output: (B, SEQ_LEN, D) hidden states, one per token (start, words, end, pads); because the
attention is causal, the end and pad tokens summarise the whole caption, as in CLIP.

The weights are a seeded random initialisation that is never trained. `ToyTextEncoder.from_seed`
draws them with an explicit torch.Generator; the project ships them in
`weights/text_encoder.safetensors` (world 1) and `weights/world2/text_encoder.safetensors` (world 2)
so nothing depends on RNG behaviour across torch versions.

One class serves both worlds: `vocabulary` is the world module whose tokenizer, VOCAB_SIZE and SEQ_LEN
it uses (world.py by default). A file records it as metadata "world" ("2" for world2.py); files
without that key are world 1's, so the shipped world-1 encoder loads exactly as before.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import world, world2

DEFAULT_SEED = 1234
DEFAULT_DIM = 64
DEFAULT_LAYERS = 2
DEFAULT_HEADS = 4
# The metadata value "world" names the vocabulary; world 1's files predate the key and have none.
WORLDS = {"1": world, "2": world2}


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        split = lambda z: z.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class ToyTextEncoder(nn.Module):
    """Frozen random causal transformer: token ids (B, SEQ_LEN) -> embeddings (B, SEQ_LEN, dim)."""

    def __init__(self, dim: int = DEFAULT_DIM, layers: int = DEFAULT_LAYERS, heads: int = DEFAULT_HEADS,
                 vocab_size: int | None = None, seq_len: int | None = None, vocabulary=world):
        super().__init__()
        self.dim, self.n_layers, self.heads = dim, layers, heads
        self.vocabulary = vocabulary
        self.vocab_size = vocabulary.VOCAB_SIZE if vocab_size is None else vocab_size
        self.seq_len = vocabulary.SEQ_LEN if seq_len is None else seq_len
        self.token_embedding = nn.Parameter(torch.zeros(self.vocab_size, dim))
        self.position_embedding = nn.Parameter(torch.zeros(self.seq_len, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(layers)])
        self.final_ln = nn.LayerNorm(dim)
        self.requires_grad_(False)
        self.eval()

    # -------------------------------------------------------------- construction
    @torch.no_grad()
    def init_from_seed(self, seed: int = DEFAULT_SEED) -> ToyTextEncoder:
        """Deterministic init: N(0,1) token embeddings, N(0, 0.5^2) positions, N(0, 1/fan_in)
        linear weights, zero biases, unit LayerNorms. Drawn in parameter-name order."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name == "token_embedding":
                p.copy_(torch.randn(p.shape, generator=g))
            elif name == "position_embedding":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif ("ln" in name.split(".")[-2]) and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:  # linear weight (out, in)
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        return self

    @classmethod
    def from_seed(cls, seed: int = DEFAULT_SEED, **kw) -> ToyTextEncoder:
        return cls(**kw).init_from_seed(seed)

    def config(self) -> dict:
        return {"dim": self.dim, "layers": self.n_layers, "heads": self.heads,
                "vocab_size": self.vocab_size, "seq_len": self.seq_len}

    def world_key(self) -> str:
        return next(k for k, module in WORLDS.items() if module is self.vocabulary)

    def save(self, path: str, metadata: dict | None = None) -> None:
        from safetensors.torch import save_file
        meta = {k: str(v) for k, v in self.config().items()}
        if self.vocabulary is not world:  # world 1's files have no key: they load as world 1
            meta["world"] = self.world_key()
        meta.update({k: str(v) for k, v in (metadata or {}).items()})
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path, metadata=meta)

    @classmethod
    def load(cls, path: str) -> ToyTextEncoder:
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        kw = {k: int(meta[k]) for k in ("dim", "layers", "heads", "vocab_size", "seq_len") if k in meta}
        enc = cls(**kw, vocabulary=WORLDS[meta.get("world", "1")])
        enc.load_state_dict(load_file(path), strict=True)
        return enc

    # -------------------------------------------------------------- encoding
    @torch.no_grad()
    def forward(self, ids: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """ids (B, T) -> (B, T, dim). `layer` (CLIP "clip skip" style, e.g. -2) stops after that
        block; the final LayerNorm is applied either way. None or -1 = the full encoder."""
        dev = self.token_embedding.device
        h = self.token_embedding[ids.to(dev)] + self.position_embedding[: ids.shape[1]]
        stop = len(self.blocks) if layer is None else (layer % len(self.blocks)) + 1
        for blk in self.blocks[:stop]:
            h = blk(h)
        return self.final_ln(h)

    def encode_text(self, texts: list[str] | str) -> torch.Tensor:
        """Captions -> (B, SEQ_LEN, dim) float32."""
        if isinstance(texts, str):
            texts = [texts]
        return self(self.vocabulary.tokenize_batch(texts)).float()

    def embedding_table(self):
        """World 1 only: (E, U), E (72, SEQ_LEN, dim) for every caption in combo_index order; U (SEQ_LEN, dim) for ""."""
        if self.vocabulary is not world:
            raise ValueError("embedding_table lists world 1's 72 captions; world 2 encodes its captions per batch")
        return self.encode_text(world.ALL_CAPTIONS), self.encode_text([""])[0]


def default_path(world_key: str) -> str:
    weights = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
    return os.path.join(weights, "text_encoder.safetensors") if world_key == "1" else \
        os.path.join(weights, f"world{world_key}", "text_encoder.safetensors")


def main(argv=None):
    """python -m toyworld.text_encoder --seed 1234 [--world 2]; --out defaults to the shipped file of that world"""
    import argparse
    import shlex
    import sys

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--dim", type=int, default=DEFAULT_DIM)
    p.add_argument("--layers", type=int, default=DEFAULT_LAYERS)
    p.add_argument("--heads", type=int, default=DEFAULT_HEADS)
    p.add_argument("--world", choices=sorted(WORLDS), default="1", help="whose vocabulary and SEQ_LEN")
    p.add_argument("--out", default=None, help="default: the shipped file of --world")
    a = p.parse_args(argv)
    out = a.out or default_path(a.world)
    vocabulary = WORLDS[a.world]
    enc = ToyTextEncoder.from_seed(a.seed, dim=a.dim, layers=a.layers, heads=a.heads, vocabulary=vocabulary)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    cmd = "python -m toyworld.text_encoder " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {"format": "toyworld-text-encoder-v1", "seed": a.seed, "command": cmd,
            "torch": torch.__version__, "vocab": " ".join(vocabulary.VOCAB)}
    enc.save(out, meta)
    n = sum(p.numel() for p in enc.parameters())
    print(f"saved {out}: {n} parameters, seed {a.seed}, world {a.world}")


if __name__ == "__main__":
    main()
