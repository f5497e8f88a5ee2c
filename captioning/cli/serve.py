"""``captioning serve``: the web demo and HTTP API of a checkpoint or exported model (:mod:`captioning.serve`).

Gradio is an optional extra (``pip install -e '.[serve]'``); without it the command fails in one line naming it,
before the model is loaded. There is no ``--share``: Gradio's public share links tunnel through a third-party
server, and this is a demo meant for this machine (``--host 0.0.0.0`` opens it to the local network).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from captioning import serve as server
from captioning.api import load
from captioning.cli import common


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be 1..65535, got {value}")
    return value


def main(argv: Sequence[str]) -> None:
    parser = common.parser("serve", "A web page (and Gradio HTTP API) that captions uploaded images.")
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint (.ckpt) written by fit, a folder written by export, or a Hub id"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=_port, default=7860, help="TCP port (default: 7860)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: cpu)")
    parser.add_argument(
        "--max-pixels",
        type=common.positive,
        default=server.MAX_PIXELS,
        help=f"refuse images with more pixels than this, width x height (default: {server.MAX_PIXELS:,})",
    )
    args = parser.parse_args(argv)
    server.import_gradio()  # fail in one line before loading the model when the extra is missing
    model = load(args.ckpt, device=common.device(args.device))
    server.serve(model, host=args.host, port=args.port, max_pixels=args.max_pixels, source=str(args.ckpt))
