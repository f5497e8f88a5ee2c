"""Running a model for inference whatever mode its caller left it in.

A notebook user's model may be in train mode (dropout on, BatchNorm normalizing with batch statistics and updating
its running ones), which makes captions random and changes the model. Every inference entry point (beam search and
greedy decoding, ``caption_images``, the backbone gates of the visualizations) therefore runs inside
:func:`inference`: eval mode and ``torch.inference_mode`` while it runs, then every submodule's own train/eval flag
put back, whatever it was (a model in training may hold some parts in eval mode, e.g. a frozen backbone's BN).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

import torch
from torch import nn

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=nn.Module)


@contextmanager
def inference(module: nn.Module) -> Iterator[nn.Module]:
    """Puts ``module`` in eval mode and enables ``torch.inference_mode`` for the ``with`` block; afterwards every
    submodule's ``training`` flag is what it was before.

    The flags are put back by assignment, not by ``train()``: a module whose ``train()`` also changes its children
    (an encoder that keeps its frozen stages in eval mode) would otherwise not return to the exact state it was in.
    Tensors made inside the block are inference tensors: read them freely, ``clone()`` one before changing it in
    place.

    Args:
        module: the model to run.

    Yields:
        ``module``, in eval mode.
    """
    flags = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        with torch.inference_mode():
            yield module
    finally:
        for submodule, training in flags:
            submodule.training = training


def in_inference_mode(function: Callable[Concatenate[M, P], R]) -> Callable[Concatenate[M, P], R]:
    """Decorator: ``function(module, ...)`` runs inside :func:`inference` of its first argument."""

    @functools.wraps(function)
    def wrapper(module: M, *args: P.args, **kwargs: P.kwargs) -> R:
        with inference(module):
            return function(module, *args, **kwargs)

    return wrapper
