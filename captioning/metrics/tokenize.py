"""PTB tokenization, the COCO caption evaluation's text normalization.

pycocoevalcap's ``PTBTokenizer`` (Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation
Server", arXiv 1504.00325) runs the Stanford CoreNLP 3.4.1 ``PTBTokenizer`` (Java; the jar ships in the package)
with ``-preserveLines -lowerCase``, one caption per line, then drops the punctuation tokens in its
``PUNCTUATIONS`` list. The scorers in :mod:`captioning.metrics.scorers` expect text tokenized this way, references
and candidates alike (REFERENCE.md section 5).

:func:`ptb_tokenize` calls ``PTBTokenizer.tokenize`` itself and returns the same tokens, with three departures
that change no token of a caption pycocoevalcap tokenizes correctly:

- Line breaks inside a caption become spaces. pycocoevalcap replaces only ``\\n``, but Java also starts a new line
  at ``\\r``, ``\\v``, ``\\f``, U+2028 and U+2029, and that silently shifts every later caption onto the wrong image.
- Java's progress line on stderr ("PTBTokenizer tokenized N tokens at ...") is dropped; anything else it writes
  there is passed on to ``sys.stderr``.
- A missing ``java`` raises :class:`~captioning.errors.CaptioningError` before pycocoevalcap writes its temp file
  (it writes one into its own package folder, which must be writable).

Kept as pycocoevalcap has it: ``-lowerCase`` turns the bracket tokens "-LRB-"/"-RRB-" into "-lrb-"/"-rrb-", which
its punctuation list (upper case) then misses, so "(very)" becomes "-lrb- very -rrb-".
"""

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence

from pycocoevalcap.tokenizer import ptbtokenizer

from captioning.errors import CaptioningError

# Printed by edu.stanford.nlp.process.PTBTokenizer on stderr after every run.
_PROGRESS_PREFIX = "PTBTokenizer tokenized "


def ptb_tokenize(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """Tokenize captions exactly as pycocoevalcap's PTBTokenizer does.

    Lowercases, splits off punctuation and clitics the Penn Treebank way ("don't" -> "do n't") and drops
    punctuation tokens. Starts one JVM (about 0.5 s) per call, so tokenize a whole split at once.

    Args:
        captions: Image id -> raw captions (an image may have none).

    Returns:
        Image id -> tokenized captions (tokens joined by single spaces), same ids, order and counts as the input.

    Raises:
        ValueError: If a value is a single string instead of a list of strings, or holds something not a string.
        CaptioningError: If ``java`` is not on the PATH, pycocoevalcap's folder is not writable, or the tokenizer
            returned the wrong number of captions.
    """
    for image_id, texts in captions.items():
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"captions[{image_id!r}] must be a list of strings, got {texts!r}")
    if not any(captions.values()):
        return {image_id: [] for image_id in captions}
    if shutil.which("java") is None:
        raise CaptioningError("PTB tokenization runs Stanford CoreNLP and needs Java: no `java` on the PATH")

    coco_format = {
        image_id: [{"caption": " ".join(text.splitlines())} for text in texts] for image_id, texts in captions.items()
    }
    try:
        tokenized = _quietly_tokenize(coco_format)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        folder = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
        raise CaptioningError(f"pycocoevalcap's PTBTokenizer writes a temp file into {folder}: not writable") from error

    result = {image_id: tokenized.get(image_id, []) for image_id in captions}
    wrong = [image_id for image_id, texts in captions.items() if len(result[image_id]) != len(texts)]
    if wrong:
        raise CaptioningError(f"the PTB tokenizer returned the wrong number of captions for image ids {wrong[:5]}")
    return result


def _quietly_tokenize(coco_format: dict[int, list[dict[str, str]]]) -> dict[int, list[str]]:
    """Run ``PTBTokenizer.tokenize`` with Java's stderr captured, then pass on all but the progress line.

    Java inherits file descriptor 2, not ``sys.stderr``, so the descriptor itself points at a temp file while the
    tokenizer runs. Whatever other threads write to stderr meanwhile is passed on afterwards, not lost.
    """
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return ptbtokenizer.PTBTokenizer().tokenize(coco_format)
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            messages = [line for line in lines if line.strip() and not line.startswith(_PROGRESS_PREFIX)]
            if messages:
                sys.stderr.write("\n".join(messages) + "\n")
