"""COCO caption metrics: pycocoevalcap's scorers as pure functions over pre-tokenized text.

Metrics and papers:

- BLEU-1..4: Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL 2002
  (ACL Anthology P02-1040).
- METEOR 1.5: Denkowski & Lavie, "Meteor Universal: Language Specific Translation Evaluation for Any Target
  Language", WMT 2014 (W14-3348); Java, run with ``-l en -norm``.
- ROUGE-L: Lin, "ROUGE: A Package for Automatic Evaluation of Summaries", ACL workshop 2004 (W04-1013); LCS
  F-measure with beta = 1.2.
- CIDEr-D: Vedantam, Zitnick & Parikh, "CIDEr: Consensus-based Image Description Evaluation", CVPR 2015,
  arXiv 1411.5726.

Every number is pycocoevalcap's (1.2): BLEU, METEOR and ROUGE-L feed its scorers (``Bleu(4)``, ``Meteor()``,
``Rouge()``) the ``{id: [candidate]}`` and ``{id: references}`` dicts they expect; CIDEr-D comes from
:mod:`captioning.metrics.cider`, a vectorized ``Cider()`` with the same numbers (to about 1e-15), over ten times
faster. Conventions (Chen et al. 2015, arXiv 1504.00325, section 3, and pycocoevalcap's code):

- Input is already tokenized the COCO way (lowercased, punctuation dropped, tokens joined by single spaces):
  run :func:`~captioning.metrics.tokenize.ptb_tokenize` on raw text first, or let :func:`coco_scores` do it.
- Candidates ``{id: str}`` hold exactly one caption per image (dedupe by image id first); references
  ``{id: [str, ...]}`` at least one each; both have the same ids. An empty candidate is valid and scores 0.
- Per-image score lists follow ``sorted(candidates)``, the image ids in ascending order.
- Corpus scores are corpus-level, not averages you can rebuild from shards: BLEU sums n-gram counts over the
  corpus (brevity penalty against the closest reference length), METEOR aggregates its statistics, and CIDEr-D's
  IDF comes from the references of the images being scored (``log N`` for N images). Score a whole split in one
  call. ROUGE-L and CIDEr-D corpus scores are the means of the per-image scores.
- CIDEr-D: n = 1..4, Gaussian length penalty with sigma = 6, clipped n-gram counts, x10. With a single image every
  CIDEr-D score is 0 (each n-gram's IDF is log 1 - log 1).
- Scores lie in [0, 1] (CIDEr-D in [0, 10]); papers report them x100.
"""

import atexit
import contextlib
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from tqdm import tqdm

from captioning.errors import CaptioningError
from captioning.metrics.cider import CiderD
from captioning.metrics.spice import spice_score
from captioning.metrics.tokenize import Backend, ptb_tokenize

METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")
WITH_SPICE = (*METRICS, "SPICE")  # SPICE needs extra jars and minutes of parsing: asked for by name
BLEU_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")

# METEOR talks to Java one line per caption; Java's readLine() also ends a line at "\r".
_LINE_BREAK = re.compile(r"[\r\n]")


def bleu(
    candidates: Mapping[int, str], references: Mapping[int, Sequence[str]]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """BLEU-1..4 as pycocoevalcap computes them (``option="closest"``).

    Args:
        candidates: Image id -> tokenized candidate caption.
        references: Image id -> tokenized reference captions.

    Returns:
        Corpus scores ``{"Bleu_1": ..., "Bleu_4": ...}`` and per-image scores under the same names, in
        ``sorted(candidates)`` order. The per-image values are pycocoevalcap's smoothed sentence-level BLEU; their
        mean is not the corpus score.
    """
    res, gts = _coco_format(candidates, references)
    # verbose=0: Bleu otherwise prints its n-gram totals to stdout.
    score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    corpus = {name: float(value) for name, value in zip(BLEU_NAMES, score, strict=True)}
    per_image = {name: [float(value) for value in values] for name, values in zip(BLEU_NAMES, scores, strict=True)}
    return corpus, per_image


def meteor(candidates: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> tuple[float, list[float]]:
    """METEOR 1.5 through pycocoevalcap's Java wrapper.

    The first call starts METEOR's JVM (about 5 s, up to 2 GB heap); later calls in the process reuse it, so that
    a run that scores many times (each validation epoch, each ablation variant) pays the start once. METEOR's
    ``-stdio`` mode keeps no state between ``EVAL`` lines: a reused JVM gives a fresh one's numbers
    (tests/metrics/test_scorers.py checks). An error stops the JVM (the next call starts a new one); so does
    :func:`close_meteor` and the end of the process.

    Args:
        candidates: Image id -> tokenized candidate caption.
        references: Image id -> tokenized reference captions.

    Returns:
        The corpus score (from METEOR's aggregated statistics, not the mean of the per-image scores) and the
        per-image scores in ``sorted(candidates)`` order.

    Raises:
        ValueError: On mismatched ids, an image without references, or a caption holding a line break.
        CaptioningError: If ``java`` is missing or the METEOR process died.
    """
    res, gts = _coco_format(candidates, references)
    for image_id in res:
        if any(_LINE_BREAK.search(text) for text in (*res[image_id], *gts[image_id])):
            raise ValueError(f"image id {image_id!r}: a caption holds a line break, which would desync METEOR")
    if shutil.which("java") is None:  # checked first: a Meteor() whose JVM failed to start breaks in __del__
        raise CaptioningError("METEOR 1.5 is a Java program and needs Java: no `java` on the PATH")
    with _METEOR_START:
        scorer = _meteor_process()
        try:
            score, scores = scorer.compute_score(gts, res)
        except (ValueError, OSError) as error:
            death = _meteor_death(scorer)
            close_meteor()
            if death is None:
                raise
            raise CaptioningError(death) from error
        except BaseException:  # e.g. an interrupt mid-answer: the JVM's pipes are out of step, start afresh next time
            close_meteor()
            raise
    return float(score), [float(value) for value in scores]


# One METEOR JVM per process, started on first use (see meteor()). The lock also serializes callers: the JVM answers
# one EVAL at a time.
_METEOR: Meteor | None = None
_METEOR_START = threading.RLock()


def _meteor_process() -> Meteor:
    global _METEOR
    if _METEOR is not None and _METEOR.meteor_p.poll() is not None:  # the JVM died between calls: start another
        close_meteor()
    if _METEOR is None:
        _METEOR = Meteor()
    return _METEOR


def close_meteor() -> None:
    """Stop the process's METEOR JVM, if one runs (the next :func:`meteor` call starts a new one)."""
    global _METEOR
    with _METEOR_START:
        scorer, _METEOR = _METEOR, None
        if scorer is not None:
            _close_meteor(scorer)


atexit.register(close_meteor)


def _meteor_death(scorer: Meteor) -> str | None:
    """Why METEOR's JVM died, in one line; None if it still runs (then the error was not its death)."""
    # A dead JVM (e.g. one that could not reserve its 2 GB heap) breaks the pipe, or answers b"", which float()
    # rejects. It may close its output a moment before it exits.
    process = scorer.meteor_p
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    if process.returncode is None:
        return None
    detail = process.stderr.read().decode(errors="replace").strip().splitlines()
    message = detail[-1] if detail else "no message"
    return f"METEOR's Java process exited with code {process.returncode}: {message}"


def rouge_l(candidates: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> tuple[float, list[float]]:
    """ROUGE-L: LCS F-measure (beta = 1.2) of the highest LCS precision and highest recall over the references.

    pycocoevalcap splits captions on single spaces, so a doubled space counts as an empty token.

    Args:
        candidates: Image id -> tokenized candidate caption.
        references: Image id -> tokenized reference captions.

    Returns:
        The corpus score (mean of the per-image scores) and the per-image scores in ``sorted(candidates)`` order.
    """
    res, gts = _coco_format(candidates, references)
    score, scores = Rouge().compute_score(gts, res)
    return float(score), [float(value) for value in scores]


def cider_d(
    candidates: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    document_frequency: Mapping[Hashable, Sequence[str]] | None = None,
) -> tuple[float, list[float]]:
    """CIDEr-D (pycocoevalcap's ``Cider``), document frequencies from ``references`` unless another corpus is given.

    Computed by :class:`~captioning.metrics.cider.CiderD` (vectorized, equal to pycocoevalcap to about 1e-15).
    Scores depend on the whole set of images: IDF comes from their references. With a single image all are 0. For
    many calls against one corpus (SCST rewards), build a ``CiderD(corpus)`` once instead.

    Args:
        candidates: Image id -> tokenized candidate caption.
        references: Image id -> tokenized reference captions.
        document_frequency: The corpus to count document frequencies in: document id -> tokenized reference captions
            (N = its size), e.g. the training references; None for the COCO evaluation's choice, the references
            being scored.

    Returns:
        The corpus score (mean of the per-image scores) and the per-image scores in ``sorted(candidates)`` order.

    Raises:
        ValueError: On mismatched ids, an image without references, or (without ``corpus``) references without a
            single token.
    """
    res, gts = _coco_format(candidates, references)
    if document_frequency is None and not any(text.split() for refs in gts.values() for text in refs):
        raise ValueError("CIDEr-D needs references with at least one token")  # pycocoevalcap fails on them
    return CiderD(document_frequency).score({image_id: texts[0] for image_id, texts in res.items()}, gts)


def coco_scores(
    candidates: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    *,
    metrics: Sequence[str] = METRICS,
    tokenize: bool = True,
    tokenizer: Backend = "java",
    show_progress: bool = False,
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """The COCO caption evaluation: optional PTB tokenization, then each selected metric on its own.

    Unlike ``COCOEvalCap.evaluate()``, one metric failing cannot take the others down: ``"SPICE"``, when it cannot run
    here (:func:`~captioning.metrics.spice.spice_unavailable`), is left out of the results with one line on stderr.

    Args:
        candidates: Image id -> candidate caption, raw if ``tokenize`` else tokenized.
        references: Image id -> reference captions, raw if ``tokenize`` else tokenized.
        metrics: Any of ``"Bleu"`` (gives Bleu_1..Bleu_4), ``"METEOR"``, ``"ROUGE_L"``, ``"CIDEr"``, ``"SPICE"``.
        tokenize: Run :func:`~captioning.metrics.tokenize.ptb_tokenize` on both sides first.
        tokenizer: Its backend: ``"java"`` (pycocoevalcap's) or ``"python"`` (no JVM; same tokens on caption text).
        show_progress: Show a tqdm bar over the metrics.

    Returns:
        Corpus scores under pycocoevalcap's names (Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr, SPICE) and per-image scores
        ``{image_id: {name: score}}`` with image ids in ascending order.
    """
    unknown = [name for name in metrics if name not in WITH_SPICE]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty selection of {WITH_SPICE}, got {tuple(metrics)}")
    _check_inputs(candidates, references)
    if tokenize:
        references = ptb_tokenize(references, backend=tokenizer)
        tokenized = ptb_tokenize(_as_lists(candidates), backend=tokenizer)
        candidates = {image_id: texts[0] for image_id, texts in tokenized.items()}

    corpus: dict[str, float] = {}
    columns: dict[str, list[float]] = {}
    # METEOR is a Java process (a 5 s JVM start, then its own matching): it runs in a thread, waiting on its pipes
    # without the GIL, while the other metrics compute here, so on two cores they hide behind it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        java = pool.submit(meteor, candidates, references) if "METEOR" in metrics else None
        for name in tqdm([m for m in metrics if m != "METEOR"], desc="COCO metrics", disable=not show_progress):
            _score_one(name, candidates, references, corpus, columns)
        if java is not None:
            corpus["METEOR"], columns["METEOR"] = java.result()
    order = {name: k for k, name in enumerate(metrics)}  # the caller's metric order, as before
    rank = {key: order["Bleu" if key.startswith("Bleu") else key] for key in corpus}
    corpus = dict(sorted(corpus.items(), key=lambda item: rank[item[0]]))
    columns = dict(sorted(columns.items(), key=lambda item: rank[item[0]]))

    image_ids = sorted(candidates)
    per_image = {
        image_id: {name: values[i] for name, values in columns.items()} for i, image_id in enumerate(image_ids)
    }
    return corpus, per_image


def _score_one(
    name: str,
    candidates: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    corpus: dict[str, float],
    columns: dict[str, list[float]],
) -> None:
    """Adds metric ``name`` (not METEOR) to ``corpus`` and ``columns``."""
    if name == "Bleu":
        bleu_corpus, bleu_per_image = bleu(candidates, references)
        corpus |= bleu_corpus
        columns |= bleu_per_image
        return
    if name == "SPICE":
        try:
            corpus[name], columns[name] = spice_score(candidates, references)
        except CaptioningError as skipped:  # no jars, no Java, or SPICE crashed: the other metrics stand
            print(skipped, file=sys.stderr)
        return
    score_fn = {"ROUGE_L": rouge_l, "CIDEr": cider_d}[name]
    corpus[name], columns[name] = score_fn(candidates, references)


def _coco_format(
    candidates: Mapping[int, str], references: Mapping[int, Sequence[str]]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Check the inputs and build pycocoevalcap's ``res`` and ``gts`` dicts, both in ``sorted(candidates)`` order.

    pycocoevalcap's scorers return per-image scores in the order of the dicts' keys; sorting here makes that order
    explicit. They also insist on real lists (``type(x) is list``).
    """
    _check_inputs(candidates, references)
    image_ids = sorted(candidates)
    res = {image_id: [candidates[image_id]] for image_id in image_ids}
    gts = {image_id: list(references[image_id]) for image_id in image_ids}
    return res, gts


def _check_inputs(candidates: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> None:
    if not candidates:
        raise ValueError("no candidates to score")
    missing = set(candidates) - set(references)
    extra = set(references) - set(candidates)
    if missing or extra:
        raise ValueError(
            "candidates and references must have the same image ids: "
            f"no references for {_some(missing)}, no candidate for {_some(extra)}"
        )
    for image_id, text in candidates.items():
        if not isinstance(text, str):
            raise ValueError(f"candidates[{image_id!r}] must be one caption (a string), got {text!r}")
    for image_id, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(ref, str) for ref in refs):
            raise ValueError(f"references[{image_id!r}] must be a non-empty list of strings, got {refs!r}")


def _some(image_ids: Iterable[int], limit: int = 5) -> str:
    """Name up to ``limit`` ids for an error message."""
    try:
        ordered = sorted(image_ids)
    except TypeError:  # ids of mixed types, e.g. "1" and 1: a common cause of mismatches
        ordered = sorted(image_ids, key=repr)
    if not ordered:
        return "none"
    more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return ", ".join(repr(image_id) for image_id in ordered[:limit]) + more


def _as_lists(candidates: Mapping[int, str]) -> dict[int, list[str]]:
    return {image_id: [text] for image_id, text in candidates.items()}


def _close_meteor(scorer: Meteor) -> None:
    """Stop METEOR's JVM now rather than whenever ``Meteor.__del__`` runs."""
    # compute_score() keeps its lock when it raises, and __del__ takes the same lock: release it, or the garbage
    # collector would block forever. Nobody else holds this instance, so the lock is ours.
    if scorer.lock.locked():
        scorer.lock.release()
    close = getattr(scorer, "close", None)
    if callable(close):
        close()
        return
    process = scorer.meteor_p
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        # stdin may still buffer a line for the dead JVM, whose flush on close raises BrokenPipeError.
        with contextlib.suppress(BrokenPipeError):
            stream.close()
