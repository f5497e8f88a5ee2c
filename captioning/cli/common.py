"""What the plain commands share."""

from __future__ import annotations

import argparse

SPICE_HELP = "also score SPICE where it can run (its jars: captioning prepare spice); else one line says why not"


def parser(command: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of ``captioning COMMAND``."""
    return argparse.ArgumentParser(prog=f"captioning {command}", description=description)
