"""``captioning score``: pycocoevalcap's numbers for a COCO results file."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from captioning.cli import common
from captioning.data.coco import read_coco_references, read_coco_results
from captioning.errors import CaptioningError
from captioning.metrics import METRICS, WITH_SPICE, coco_scores
from captioning.workflows.files import write_json


def main(argv: Sequence[str]) -> dict[str, float]:
    """``captioning score REFERENCES RESULTS``: pycocoevalcap's numbers for a results file.

    As ``COCOEvalCap`` does: the images scored are those of the results (the reference file may hold more, e.g. the
    40,504 val2014 images for the 5,000 Karpathy test results), each against every one of its references, also
    those that tokenize to nothing (:func:`~captioning.data.coco.read_coco_references`). A result image without
    references, or a caption that is not a string, is an error.
    """
    parser = common.parser("score", "Score a COCO results file against a COCO captions file.")
    parser.add_argument("references", type=Path, help="COCO captions file (the ground truth; may hold more images)")
    parser.add_argument("predictions", type=Path, help="COCO results file: [{image_id, caption}, ...]")
    parser.add_argument("--out", type=Path, default=None, help="write the scores here as JSON")
    parser.add_argument("--per-image", type=Path, default=None, help="write per-image scores here as JSON")
    parser.add_argument("--spice", action=argparse.BooleanOptionalAction, default=True, help=common.SPICE_HELP)
    args = parser.parse_args(argv)
    candidates = read_coco_results(args.predictions)
    if not candidates:
        raise CaptioningError(f"{args.predictions}: the results file holds no captions")
    references = read_coco_references(args.references, image_ids=candidates.keys())
    scores, per_image = coco_scores(candidates, references, metrics=WITH_SPICE if args.spice else METRICS)
    if args.out:
        write_json(args.out, scores)
    if args.per_image:
        write_json(args.per_image, {str(k): v for k, v in per_image.items()})
    print(json.dumps(scores, indent=2))
    return scores
