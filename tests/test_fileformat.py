"""Refiner files: round trip, metadata, atomic saves, clear errors, and the paper-snapshot importer."""

import os
import pickle
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from dice_core.fileformat import RefinerBundle, RefinerFileError, load_refiner, save_refiner
from dice_core.legacy_import import import_paper_snapshot
from dice_core.refiner import Refiner


def _bundle(dim=64, seed=0):
    torch.manual_seed(seed)
    return RefinerBundle(
        module=Refiner(dim, inner_dim=32, heads=4), family="SD15", keep_rule="clip_chunk_start",
        null_uc=torch.randn(1, 77, dim), recipe={"steps": 10, "lr": 3e-3}, base_model_hash="sha256-sample:abc", train_step=10,
        loss_history=[0.5, 0.4],
    )


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    b = _bundle()
    path = save_refiner(str(tmp_path / "r.safetensors"), b)
    loaded = load_refiner(path)
    for k, v in b.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v)
    assert (loaded.family, loaded.keep_rule, loaded.train_step) == ("SD15", "clip_chunk_start", 10)
    assert loaded.recipe == {"lr": 3e-3, "steps": 10} and loaded.base_model_hash == "sha256-sample:abc"
    assert torch.equal(loaded.null_uc, b.null_uc) and loaded.loss_history == [0.5, 0.4]
    assert (loaded.embed_dim, loaded.module.inner_dim, loaded.module.heads) == (64, 32, 4)


def test_refine_without_negative_uses_stored_null_embedding(tmp_path):
    b = _bundle()
    c = torch.randn(1, 77, 64)
    expected = b.refine(c, b.null_uc)
    assert torch.equal(b.refine(c), expected)


def test_t5_style_padding_extends_prompt_to_recorded_length():
    b = _bundle()
    b.keep_rule, b.pad_to, b.pad_token = "none", 12, torch.randn(64)
    out = b.refine(torch.randn(1, 5, 64), torch.randn(1, 1, 64))
    assert out.shape == (1, 12, 64)


def test_save_is_atomic_and_leaves_no_temp_files_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.safetensors"
    save_refiner(str(path), _bundle(seed=0))
    before = path.read_bytes()

    import dice_core.fileformat as ff

    def exploding_save(tensors, filename, metadata):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ff, "save_file", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_refiner(str(path), _bundle(seed=1))
    assert path.read_bytes() == before, "a failed save must not touch the existing file"
    assert os.listdir(tmp_path) == ["r.safetensors"]


def test_saved_file_has_the_permissions_a_plain_write_would_give(tmp_path):
    """The atomic writer's temp file starts owner-only; the saved file must not stay so (a second user, or a
    container mounting models/, could not read it). Compared with a file opened normally under the same umask."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "r.safetensors"
        save_refiner(str(path), _bundle())
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
        assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "r.safetensors"
    save_refiner(str(path), _bundle())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RefinerFileError, match="truncated or corrupt"):
        load_refiner(str(path))
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(RefinerFileError, match="truncated or corrupt"):
        load_refiner(str(path))


def test_non_dice_safetensors_is_rejected_with_a_hint(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, str(path), metadata={"ss_network": "lora"})
    with pytest.raises(RefinerFileError, match="not a DICE refiner"):
        load_refiner(str(path))


def test_nan_weights_and_wrong_shapes_are_rejected(tmp_path):
    b = _bundle()
    sd = {k: v.clone() for k, v in b.module.state_dict().items()}
    sd["fc2.bias"][0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(sd, str(path), metadata={"format": "dice-refiner", "format_version": "1", "embed_dim": "64",
                                        "inner_dim": "32", "heads": "4"})
    with pytest.raises(RefinerFileError, match="NaN"):
        load_refiner(str(path))
    sd = {k: v.clone() for k, v in b.module.state_dict().items()}
    sd["fc2.weight"] = torch.zeros(65, 32)
    save_file(sd, str(path), metadata={"format": "dice-refiner", "format_version": "1", "embed_dim": "64",
                                        "inner_dim": "32", "heads": "4"})
    with pytest.raises(RefinerFileError, match="fc2.weight has shape"):
        load_refiner(str(path))


def test_bare_weights_with_the_papers_names_load(tmp_path):
    r = Refiner(768)
    path = tmp_path / "paper.safetensors"
    save_file({k: v.contiguous() for k, v in r.state_dict().items()}, str(path))
    loaded = load_refiner(str(path))
    assert loaded.embed_dim == 768 and loaded.null_uc is None
    with pytest.raises(ValueError, match="no stored null embedding"):
        loaded.refine(torch.randn(1, 77, 768))


# ---- the paper's pickled snapshots ------------------------------------------------------------

def _paper_like_module():
    """Classes with the paper's module path and attribute layout, so pickle records the same globals."""
    mod = types.ModuleType("dice_sharpener")

    class Attention(torch.nn.Module):
        def __init__(self, dim=512, heads=8):
            super().__init__()
            self.scale, self.heads = (dim // heads) ** -0.5, heads
            self.to_q = torch.nn.Linear(dim, dim, bias=False)
            self.to_k = torch.nn.Linear(dim, dim, bias=False)
            self.to_v = torch.nn.Linear(dim, dim, bias=False)
            self.to_out = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Dropout(0.0))

    class Sharpener(torch.nn.Module):
        def __init__(self, d=768, inner=512, nhead=8):
            super().__init__()
            self.fc1 = torch.nn.Linear(d, inner)
            self.attention = Attention(inner, nhead)
            self.fc2 = torch.nn.Linear(inner, d)
            self.act = torch.nn.ReLU()

    for cls in (Attention, Sharpener):
        cls.__module__ = "dice_sharpener"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return mod


def _paper_snapshot(tmp_path, monkeypatch, seed: int):
    """A sharpener pickled as the paper's code pickles it, and its path; the paper's module is gone afterwards."""
    mod = _paper_like_module()
    monkeypatch.setitem(sys.modules, "dice_sharpener", mod)
    torch.manual_seed(seed)
    sharpener = mod.Sharpener()
    path = tmp_path / "sharpener-snapshot.pkl"
    with open(path, "wb") as f:
        pickle.dump(dict(model=sharpener), f)
    monkeypatch.delitem(sys.modules, "dice_sharpener")  # the importer must not need the paper's code
    return sharpener, path


def test_paper_snapshot_imports_through_the_restricted_unpickler(tmp_path, monkeypatch):
    sharpener, path = _paper_snapshot(tmp_path, monkeypatch, seed=0)
    bundle = import_paper_snapshot(str(path), family="SD15", keep_rule="clip_chunk_start")
    for k, v in sharpener.state_dict().items():
        assert torch.equal(bundle.module.state_dict()[k], v), k
    c, uc = torch.randn(1, 77, 768), torch.randn(1, 77, 768)
    with torch.no_grad():
        ref = sharpener.fc2(sharpener.act(_paper_attention(sharpener, sharpener.act(sharpener.fc1(c)), sharpener.act(sharpener.fc1(uc)))))
    torch.testing.assert_close(bundle.module(c, uc), ref, rtol=1e-4, atol=1e-5)

    out = tmp_path / "imported.safetensors"
    save_refiner(str(out), bundle)
    assert load_refiner(str(out)).recipe["source"].startswith("paper")


def test_import_paper_command_writes_a_refiner_that_loads(tmp_path, monkeypatch, capsys):
    """`python -m dice_cli import-paper SNAPSHOT OUT`: the README's one way to convert the paper's pickle."""
    from dice_cli import cli

    sharpener, snapshot = _paper_snapshot(tmp_path, monkeypatch, seed=1)
    out = tmp_path / "paper_sd15.safetensors"
    assert cli.main(["import-paper", str(snapshot), str(out)]) == 0
    loaded = load_refiner(str(out))
    assert loaded.family == "SD15" and loaded.keep_rule == "clip_chunk_start"
    for k, v in sharpener.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v), k

    snapshot.write_bytes(b"\x80\x04\x95garbage")
    assert cli.main(["import-paper", str(snapshot), str(tmp_path / "bad.safetensors")]) == 1
    assert cli.main(["import-paper", str(snapshot), str(out), "--family", "Flux"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("dice_cli: error: ") for line in err), err
    assert "Flux" in err[1] and not (tmp_path / "bad.safetensors").exists()


def _paper_attention(s, x, ctx):
    a = s.attention
    b, n, d = x.shape
    h = a.heads
    q, k, v = (t.reshape(b, -1, h, d // h).transpose(1, 2) for t in (a.to_q(x), a.to_k(ctx), a.to_v(ctx)))
    w = (q @ k.transpose(-1, -2) * a.scale).softmax(-1)
    return a.to_out(( w @ v).transpose(1, 2).reshape(b, n, d))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/dice_pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "sharpener-snapshot.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    if os.path.exists("/tmp/dice_pwned"):
        os.remove("/tmp/dice_pwned")
    with pytest.raises(RefinerFileError, match="refused to load (posix|os).system"):
        import_paper_snapshot(str(path), family="SD15", keep_rule="clip_chunk_start")
    assert not os.path.exists("/tmp/dice_pwned")


def test_a_corrupt_snapshot_is_a_clear_error(tmp_path):
    path = tmp_path / "sharpener-snapshot.pkl"
    path.write_bytes(b"\x80\x04\x95garbage")
    with pytest.raises(RefinerFileError):
        import_paper_snapshot(str(path), family="SD15", keep_rule="clip_chunk_start")
