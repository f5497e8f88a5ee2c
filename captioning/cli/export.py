"""``captioning export``: a checkpoint as a self-describing model folder (safetensors, config.json and a model card:
:mod:`captioning.export.pretrained`) or as ONNX graphs with their numpy driver (:mod:`captioning.export.onnx`)."""

from __future__ import annotations

from collections.abc import Sequence

from captioning.api import load
from captioning.cli import common
from captioning.export.onnx import export_onnx
from captioning.export.pretrained import save_pretrained


def main(argv: Sequence[str]) -> None:
    parser = common.parser("export", "Export a checkpoint for inference without the training code.")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit (or an exported folder)")
    parser.add_argument("--out", required=True, help="the output folder")
    parser.add_argument(
        "--format",
        choices=("pretrained", "onnx"),
        default="pretrained",
        help="pretrained: model.safetensors + config.json + README.md (the Hugging Face Hub's layout, what "
        "captioning.load reads); onnx: encoder.onnx + decoder_step.onnx + onnx.json (default: pretrained)",
    )
    parser.add_argument("--license", default="mit", help="the model card's license (a Hub license id; default: mit)")
    args = parser.parse_args(argv)
    model = load(args.ckpt)
    if args.format == "pretrained":
        save_pretrained(model, args.out, license=args.license)
        return
    export_onnx(model.captioner, model.vocab, image_size=model.image_size, decoding=model.decoding, out=args.out)
