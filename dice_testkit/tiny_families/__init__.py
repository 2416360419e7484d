"""Tiny models of the real architectures of every model family DICE supports, one module each.

Each module defines FAMILY (ComfyUI's model-config class name), RUNTIMES, EMBED_DIM, WIDTH, HEIGHT,
FRAMES, NOTES, build(seed, dtype, full_size), prompt(words) and empty_latent(batch); the family's
test module (tests/test_family_<name>.py) runs tests/family_checks.py on it, and benchmarks/run_gpu.py
builds the full-size architecture from the same module."""
