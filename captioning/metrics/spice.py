"""SPICE (Anderson, Fernando, Johnson & Gould, "SPICE: Semantic Propositional Image Caption Evaluation", ECCV 2016,
arXiv 1607.08822) through pycocoevalcap's own Java scorer, when it can run.

pycocoevalcap ships ``spice-1.0.jar`` but not the Stanford CoreNLP 3.6.0 jars that SPICE parses captions with; its
``Spice()`` constructor downloads them (a ~400 MB zip) on first use. Here that never happens behind the user's back:
:func:`spice_unavailable` says why SPICE cannot run (no ``java``, no CoreNLP jars), :func:`fetch_spice_models`
(``captioning prepare spice``) fetches the jars on a machine with internet, and the metric code skips SPICE with one
line when it cannot run, never taking the other metrics down. The score is SPICE's F-score over all tuple types
(``scores["All"]["f"]``), per image and as the mean over images, exactly pycocoevalcap's numbers.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path

import pycocoevalcap.spice.get_stanford_models as stanford
from pycocoevalcap.spice.spice import Spice

from captioning.errors import CaptioningError

SPICE_DIR = Path(stanford.SPICEDIR)
CORENLP_JARS = tuple(SPICE_DIR / stanford.SPICELIB / name.format(stanford.JAR) for name in ("{}.jar", "{}-models.jar"))


def spice_unavailable() -> str | None:
    """Why SPICE cannot run here (one line), or None when it can."""
    if shutil.which("java") is None:
        return "SPICE skipped: no `java` on PATH (SPICE is a Java 8+ program)"
    missing = [jar.name for jar in CORENLP_JARS if not jar.is_file()]
    if missing:
        return (
            f"SPICE skipped: Stanford CoreNLP jars missing from {CORENLP_JARS[0].parent} ({', '.join(missing)}); "
            "run `captioning prepare spice` on a machine with internet"
        )
    return None


def spice_score(candidates: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> tuple[float, list[float]]:
    """SPICE F-score of tokenized ``candidates`` against ``references``: (mean, per image in sorted id order).

    Raises:
        CaptioningError: SPICE cannot run here (see :func:`spice_unavailable`) or its Java process failed.
    """
    reason = spice_unavailable()
    if reason:
        raise CaptioningError(reason)
    image_ids = sorted(candidates)
    res = {image_id: [candidates[image_id]] for image_id in image_ids}
    gts = {image_id: list(references[image_id]) for image_id in image_ids}
    try:
        mean, per_image = Spice().compute_score(gts, res)  # jars present: its constructor downloads nothing
    except (subprocess.CalledProcessError, OSError) as error:
        raise CaptioningError(f"SPICE skipped: its Java process failed ({error})") from error
    return float(mean), [float(scores["All"]["f"]) for scores in per_image]


def fetch_spice_models() -> None:
    """Downloads the Stanford CoreNLP 3.6.0 jars next to pycocoevalcap's SPICE (needs internet; once per install)."""
    try:
        stanford.get_stanford_models()
    except (urllib.error.URLError, OSError) as error:
        raise CaptioningError(f"could not fetch the Stanford CoreNLP jars for SPICE: {error}") from error
    print(f"SPICE can run: {', '.join(str(jar) for jar in CORENLP_JARS)}")
