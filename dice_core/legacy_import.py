"""Import the paper's `sharpener-snapshot.pkl` (a pickled nn.Module under key "model") safely.

A restricted unpickler rebuilds tensors and records module attributes into inert placeholders; it
refuses every other global, so a crafted pickle cannot run code. The result is converted to this
pack's safetensors format.
"""

from __future__ import annotations

import collections
import io
import pickle

import torch

from .fileformat import WEIGHT_KEYS, RefinerBundle, RefinerFileError
from .refiner import Refiner

# Classes a sharpener snapshot legitimately contains; they become _ModuleRecord, never the real class.
_MODULE_CLASS_PREFIXES = ("torch.nn.modules.",)
_PAPER_MODULES = {"dice_sharpener", "__main__"}
_PAPER_CLASSES = {"Sharpener", "Attention"}


class _ModuleRecord:
    """Stands in for any nn.Module class: keeps the pickled __dict__ as data, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


def _module_record_class(qualname: str) -> type:
    return type(qualname, (_ModuleRecord,), {})


def _load_storage_bytes(data: bytes):
    # Storages are pickled as nested torch.save bytes; the restricted weights-only loader reads them.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _rebuild_parameter(data, requires_grad, backward_hooks, *args):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    _SAFE = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("torch", "Size"): torch.Size,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._SAFE:
            return self._SAFE[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(_MODULE_CLASS_PREFIXES) or (module in _PAPER_MODULES and name in _PAPER_CLASSES):
            return _module_record_class(name)
        if module == "copyreg" and name == "_reconstructor":
            return lambda cls, base, state: cls()
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: a sharpener snapshot only holds tensors and module "
            "attributes, so this file is not one (or it tries to run code)"
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused: persistent ids are not used by sharpener snapshots")


def _flatten(record: _ModuleRecord, prefix: str, out: dict, attrs: dict) -> None:
    for name, tensor in (record.state.get("_parameters") or {}).items():
        if tensor is not None:
            out[prefix + name] = tensor
    for key in ("heads",):
        if key in record.state and isinstance(record.state[key], int):
            attrs[prefix + key] = record.state[key]
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, _ModuleRecord):
            _flatten(child, f"{prefix}{name}.", out, attrs)


def read_paper_snapshot(path: str) -> dict[str, torch.Tensor]:
    """Return the snapshot's parameters under the official names, plus the head count."""
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise RefinerFileError(f"{path}: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError, KeyError) as e:
        raise RefinerFileError(f"{path} is not a readable sharpener snapshot (truncated or corrupt?): {e}") from None
    model = data.get("model") if isinstance(data, dict) else data
    if not isinstance(model, _ModuleRecord):
        raise RefinerFileError(f"{path}: expected a dict with the sharpener module under key 'model'")
    params: dict[str, torch.Tensor] = {}
    attrs: dict[str, int] = {}
    _flatten(model, "", params, attrs)
    missing = [k for k in WEIGHT_KEYS if k not in params]
    extra = sorted(set(params) - set(WEIGHT_KEYS))
    if missing or extra:
        raise RefinerFileError(f"{path}: not the paper's sharpener layout (missing {missing}, unexpected {extra})")
    params_heads = attrs.get("attention.heads", 8)
    return {"weights": params, "heads": params_heads}


def import_paper_snapshot(path: str, family: str, keep_rule: str, null_uc: torch.Tensor | None = None) -> RefinerBundle:
    snap = read_paper_snapshot(path)
    weights = snap["weights"]
    inner_dim, embed_dim = weights["fc1.weight"].shape
    module = Refiner(embed_dim, inner_dim, snap["heads"])
    module.load_state_dict({k: v.float() for k, v in weights.items()})
    module.eval().requires_grad_(False)
    return RefinerBundle(
        module=module,
        family=family,
        keep_rule=keep_rule,
        null_uc=null_uc,
        recipe={"source": "paper sharpener-snapshot.pkl", "file": path.rsplit("/", 1)[-1]},
    )
