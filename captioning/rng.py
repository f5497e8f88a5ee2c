"""The process's random number generator states (Python, numpy, torch CPU and CUDA), to save and restore with a
checkpoint. Lightning seeds these at the start of a run but does not checkpoint them; without them a resumed run
would draw other dropout masks and caption samples than the run it continues."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_states() -> dict:
    """Plain containers, ints and tensors only: checkpoints are read with ``weights_only`` loading, which refuses
    numpy arrays."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
