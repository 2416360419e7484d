"""Test support for ComfyUI-DICE: a real ComfyUI set up headless, tiny models of the real architectures with
seeded weights, server and browser helpers, and import-only torchvision/torchaudio stand-ins.

Imported by name by the tests, the benchmarks and the demo; never by the pack at run time (the direction
test in tests/test_architecture.py checks that), and not published (.comfyignore).
"""
