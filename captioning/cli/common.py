"""What the plain commands share."""

from __future__ import annotations

import argparse

import torch

from captioning.errors import CaptioningError

SPICE_HELP = "also score SPICE where it can run (its jars: captioning prepare spice); else one line says why not"


def parser(command: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of ``captioning COMMAND``."""
    return argparse.ArgumentParser(prog=f"captioning {command}", description=description)


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def device(name: str) -> torch.device:
    """``--device NAME`` checked before a model is loaded onto it: a one-line error for a name torch does not know or
    a CUDA device this machine lacks."""
    try:
        chosen = torch.device(name)
    except RuntimeError as e:
        raise CaptioningError(f"--device {name}: not a torch device ({e})") from e
    if chosen.type == "cuda" and (not torch.cuda.is_available() or (chosen.index or 0) >= torch.cuda.device_count()):
        raise CaptioningError(f"--device {name}: no such CUDA device here")
    return chosen
