"""Import-only stand-ins for torchvision and torchaudio, for this project's test tooling only.

ComfyUI imports both at start-up for families DICE never runs in its tests: 0.3.75 imports
torchvision for Stable Cascade, Cosmos and ACE; 0.33 also imports `torchvision.ops` (SAM3),
`torchvision.transforms.functional` (Gemma 4) and `torchaudio` (the LTX audio VAE, Whisper). PyPI has
no torchaudio for the CPU torch 2.13 used here, and PyPI's torchvision does not load beside it
(`operator torchvision::nms does not exist`), so the test environments install neither.

`install()` appends a finder to the *end* of `sys.meta_path`: Python asks it only after the normal
path finder found nothing, so a real install always wins and is never shadowed. The finder
serves the package and any submodule (`torchvision.transforms.functional`, `torchaudio.transforms`)
as a module whose attributes are placeholders. Importing, reading attributes and subclassing work,
so module-level code such as `from torchvision.ops import roi_align` or a default argument
`InterpolationMode.BILINEAR` runs; calling or instantiating any placeholder raises an error that
names it. SD1.5, SDXL and PixArt never call either package.

scripts/setup_env.sh writes `pth_line()` into a `.pth` file of each test venv, so every process
there (pytest, the ComfyUI server it starts, torchrun ranks, the demo) has the finder from start-up,
and nothing in the pack's runtime code knows about it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

PACKAGES = ("torchvision", "torchaudio")
VERSION = "0.0.0+dice.standin"


def _missing_error(qualname: str) -> RuntimeError:
    return RuntimeError(
        f"{qualname} is an import-only stand-in from ComfyUI-DICE's test tooling (tests/standins.py); "
        f"install a {qualname.split('.')[0]} built for this torch to use it"
    )


class _PlaceholderMeta(type):
    """Placeholders are classes, so they can be read, nested and subclassed at import time; using one fails."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls._standin_qualname}.{name}")

    def __call__(cls, *args, **kwargs):
        raise _missing_error(cls._standin_qualname)


def _placeholder(qualname: str) -> type:
    return _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (), {"_standin_qualname": qualname})


class StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, packages: list[str]):
        self.packages = set(packages)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in self.packages:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = StandInModule(spec.name)
        module.__path__ = []  # a package, so every submodule import comes back here
        module.__version__ = VERSION
        module.__dice_standin__ = True
        return module

    def exec_module(self, module) -> None:
        return None


def install() -> None:
    """Append the finder (once). Python asks it only after every normal finder found nothing, so it never
    shadows an installed package; a package that is installed but broken still fails loudly, as it should
    (scripts/setup_env.sh removes PyPI's torchvision, which does not load beside the CPU torch)."""
    if not any(isinstance(f, StandInFinder) for f in sys.meta_path):
        sys.meta_path.append(StandInFinder(PACKAGES))


# One line for a .pth file in a test venv's site-packages: every interpreter of that venv (pytest, the
# ComfyUI server, torchrun ranks, the demo) then gets the stand-ins, loaded from this file by path so
# that the repo itself never goes on the venv's sys.path.
def pth_line(path: str) -> str:
    return (f"import importlib.util as _u, sys as _s; _p = _u.spec_from_file_location('dice_standins', {path!r}); "
            "_m = _u.module_from_spec(_p); _s.modules['dice_standins'] = _m; _p.loader.exec_module(_m); _m.install()")
