"""The ``captioning`` command: one small module per command, each parsing its arguments and calling the library
layer (:mod:`captioning.workflows`).

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI subcommands (configs in ``configs/``, parsed by
:mod:`captioning.config`); ``prepare``, ``caption``, ``evaluate``, ``score``, ``visualize``, ``ablate``, ``extract``,
``export``, ``serve`` and ``demo`` are plain commands (``captioning/cli/<command>.py``). A user mistake
(:class:`CaptioningError`) prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from captioning.cli import ablate, caption, demo, evaluate, export, extract, prepare, score, serve, visualize
from captioning.config import LIGHTNING_COMMANDS, run_config
from captioning.errors import CaptioningError

COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {
    "prepare": prepare.main,
    "caption": caption.main,
    "evaluate": evaluate.main,
    "score": score.main,
    "visualize": visualize.main,
    "demo": demo.main,
    "ablate": ablate.main,
    "extract": extract.main,
    "export": export.main,
    "serve": serve.main,
}

USAGE = """usage: captioning COMMAND [options]   (captioning COMMAND --help for each)

training and evaluation (LightningCLI, configs in configs/):
  fit        train:            captioning fit --config configs/shapes.yaml
  validate   score a checkpoint on the val split with the Trainer
  test       score a checkpoint on the test split with the Trainer
  predict    caption the test split with the Trainer (writes predictions.json)

tools:
  prepare    make a dataset:   captioning prepare shapes --out data/shapes
             check a dataset:  captioning prepare coco|coco2014|coco2017|flickr8k|flickr30k|custom --root DIR
  caption    caption images:   captioning caption IMAGE|DIR|GLOB... --ckpt CKPT [--out captions.jsonl|.csv]
  evaluate   score a split:    captioning evaluate --ckpt CKPT --data-root DIR --split test --out DIR
  visualize  attention maps:   captioning visualize IMAGE... --ckpt CKPT --out DIR
  ablate     compare variants: captioning ablate --config C --variants configs/ablation/*.yaml --out DIR
  extract    pre-extract the frozen CNN's maps: captioning extract --config C --out DIR (then --data.features DIR)
  export     for inference:    captioning export --ckpt CKPT --out DIR [--format pretrained|onnx]
  serve      web demo + API:   captioning serve --ckpt CKPT|DIR [--host 127.0.0.1] [--port 7860]   (extra: .[serve])
  demo       the whole pipeline on the synthetic shapes set (what `make demo` runs)

--debug (any command): show the traceback of a user error instead of one line.
"""


def main(argv: Sequence[str] | None = None) -> None:
    """``captioning ARGS`` (the console script): dispatches to a command; a user error prints one line, exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        if not args or args[0] in ("-h", "--help"):
            print(USAGE, end="")
        elif args[0] in COMMANDS:
            COMMANDS[args[0]](args[1:])
        elif args[0] in LIGHTNING_COMMANDS:
            run_config(args)
        else:
            raise CaptioningError(f"unknown command {args[0]!r}; see captioning --help")
    except CaptioningError as e:
        if debug:
            raise
        print(f"captioning: error: {e}", file=sys.stderr)
        sys.exit(2)
