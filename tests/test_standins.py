"""dice_testkit/standins.py: import-only stand-ins for torchvision/torchaudio that never shadow a real install."""

import os
import subprocess
import sys
import textwrap

import pytest

from dice_testkit import standins

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, extra_path: str | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter without site-packages (-S), after the stand-ins' finder is installed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, REPO, os.environ.get("PYTHONPATH")) if p))
    prelude = "from dice_testkit import standins; standins.install()\n"
    return subprocess.run([sys.executable, "-S", "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_submodules_import_and_using_them_fails_with_a_sentence():
    r = _run("""
        import torchvision.ops, torchaudio.transforms
        from torchvision.transforms.functional import InterpolationMode
        from torchvision.ops import roi_align
        import torchaudio.functional as AF
        default = InterpolationMode.BILINEAR  # module-level use, as ComfyUI's code does at import
        class Sub(torchaudio.transforms.MelScale):  # subclassing at import time works too
            pass
        for call in (lambda: roi_align(1), lambda: Sub(), lambda: AF.resample(1)):
            try:
                call()
            except RuntimeError as e:
                print("ERR", e)
        print("STANDIN", getattr(torchvision.ops, "__dice_standin__", False))
    """)
    assert r.returncode == 0, r.stderr
    errors = [line for line in r.stdout.splitlines() if line.startswith("ERR")]
    assert len(errors) == 3
    assert "torchvision.ops.roi_align is an import-only stand-in" in errors[0]
    assert "install a torchvision built for this torch" in errors[0]
    assert "torchaudio.transforms.MelScale" in errors[1]
    assert "STANDIN True" in r.stdout


def test_a_real_install_is_never_shadowed(tmp_path):
    real = tmp_path / "site" / "torchaudio"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    (real / "transforms.py").write_text("class MelScale:\n    pass\n")
    r = _run("""
        import torchaudio, torchaudio.transforms, torchvision
        print("REAL", torchaudio.REAL, torchaudio.transforms.MelScale().__class__.__module__)
        print("VISION_STANDIN", torchvision.__dice_standin__)
    """, extra_path=str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    assert "REAL True torchaudio.transforms" in r.stdout
    assert "VISION_STANDIN True" in r.stdout, "the package that is missing still gets its stand-in"


def test_dunder_lookups_behave_like_a_missing_attribute():
    module = standins.StandInModule("torchvision")
    assert not hasattr(module, "__wrapped__")
    with pytest.raises(AttributeError):
        module.__file__  # noqa: B018


def test_the_test_venv_has_them_from_start_up():
    """scripts/setup_env.sh writes the .pth line into each test venv; ComfyUI then imports on both runtimes."""
    r = subprocess.run([sys.executable, "-c", "import sys; print('dice_standins' in sys.modules)"], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == "True", "run scripts/setup_env.sh: this venv has no stand-ins .pth"
