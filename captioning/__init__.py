"""SCA-CNN style image captioning. The Python API (:mod:`captioning.api`)::

import captioning

model = captioning.load("path/to/best.ckpt")  # a checkpoint, an exported folder or a Hub id "org/name"
print(model.caption("image.jpg")[0].caption)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captioning.api import Caption, CaptioningModel, LayerAttention, load

__all__ = ["Caption", "CaptioningModel", "LayerAttention", "load"]


def __getattr__(name: str) -> object:
    # The API is imported on first use (PEP 562), not with the package: importing any captioning module (the data
    # tools, data-loader worker processes) would otherwise import the model stack and Lightning, about 3 s.
    if name in __all__:
        return getattr(importlib.import_module("captioning.api"), name)
    raise AttributeError(f"module 'captioning' has no attribute {name!r}")
