"""PTB tokenization, the COCO caption evaluation's text normalization.

pycocoevalcap's ``PTBTokenizer`` (Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation
Server", arXiv 1504.00325) runs the Stanford CoreNLP 3.4.1 ``PTBTokenizer`` (Java; the jar ships in the package)
with ``-preserveLines -lowerCase``, one caption per line, then drops the punctuation tokens in its
``PUNCTUATIONS`` list. The scorers in :mod:`captioning.metrics.scorers` expect text tokenized this way, references
and candidates alike (Chen et al. 2015, arXiv 1504.00325, section 3.1).

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

``backend="python"`` needs no JVM: :mod:`captioning.metrics.ptb` ports the Java lexer (see there for how it was
checked), and the steps around it are the same: line breaks become spaces, all captions of a call form one input in
the same order (a few lexer rules look past the end of a line into the next caption), tokens are lowercased as
``String.toLowerCase(Locale.ENGLISH)`` does, and the same punctuation tokens are dropped. One known departure: Java
decides between final and non-final sigma with its word BreakIterator, approximated here, so an upper-case Greek
token that mixes capital sigma with digits, soft hyphens or CJK may lowercase differently.
"""

import errno
import os
import re
import shutil
import sys
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Literal

from pycocoevalcap.tokenizer import ptbtokenizer

from captioning.errors import CaptioningError
from captioning.metrics.ptb import LETTER_OR_DIGIT, tokenize_lines

Backend = Literal["java", "python"]

# Java's final-sigma rule (see _java_lower): marks and format characters (U+00AD) never break a word; CJK does.
_JOINING_CATEGORIES = frozenset(["Mn", "Mc", "Me", "Cf"])
_IDEOGRAPHIC = re.compile(
    "[\u2e80-\u2fdf\u3005\u3006\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)

# Printed by edu.stanford.nlp.process.PTBTokenizer on stderr after every run.
_PROGRESS_PREFIX = "PTBTokenizer tokenized "


def ptb_tokenize(captions: Mapping[int, Sequence[str]], *, backend: Backend = "java") -> dict[int, list[str]]:
    """Tokenize captions exactly as pycocoevalcap's PTBTokenizer does.

    Lowercases, splits off punctuation and clitics the Penn Treebank way ("don't" -> "do n't") and drops
    punctuation tokens. The Java backend starts one JVM (about 0.5 s) per call, so tokenize a whole split at once;
    the Python one needs no JVM and caches lines it has seen (references come back every validation).

    Args:
        captions: Image id -> raw captions (an image may have none).
        backend: ``"java"`` runs pycocoevalcap's tokenizer, ``"python"`` :mod:`captioning.metrics.ptb`.

    Returns:
        Image id -> tokenized captions (tokens joined by single spaces), same ids, order and counts as the input.

    Raises:
        ValueError: If a value is a single string instead of a list of strings, or holds something not a string, or
            the backend is unknown.
        CaptioningError: If ``java`` is not on the PATH, pycocoevalcap's folder is not writable, or the tokenizer
            returned the wrong number of captions.
    """
    for image_id, texts in captions.items():
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"captions[{image_id!r}] must be a list of strings, got {texts!r}")
    if backend not in ("java", "python"):
        raise ValueError(f"backend must be 'java' or 'python', got {backend!r}")
    if not any(captions.values()):
        return {image_id: [] for image_id in captions}
    if backend == "python":
        return _python_tokenize(captions)
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


def has_ptb_tokens(caption: str) -> bool:
    """Whether PTB tokenization, as pycocoevalcap runs it (either backend), leaves a token of ``caption``.

    A reference without one (empty, whitespace or punctuation only) is still a reference to pycocoevalcap: it counts
    in BLEU's closest reference length, and in CIDEr-D's mean over an image's references as a 0.

    As fast as a regex search for nearly every caption: one with a letter or digit as Java's lexer sees them and no
    "&" always keeps a token (a character entity such as "&quot;" can turn letters into punctuation). Only the
    others are tokenized, by the Python lexer (:func:`ptb_tokenize` with ``backend="python"``).
    """
    if "&" not in caption and LETTER_OR_DIGIT.search(caption):
        return True
    return _python_tokenize({0: [caption]})[0][0] != ""


def _python_tokenize(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """pycocoevalcap's PTBTokenizer.tokenize with the Python lexer: same lines, same order, same punctuation removal."""
    lines = [" ".join(text.splitlines()) for texts in captions.values() for text in texts]
    output = iter(" ".join(map(_java_lower, tokens)) for tokens in tokenize_lines(lines))  # Java's output lines
    # pycocoevalcap splits each output line on single spaces after rstrip() and drops its PUNCTUATIONS.
    punctuation = frozenset(ptbtokenizer.PUNCTUATIONS)
    return {
        image_id: [" ".join(w for w in next(output).rstrip().split(" ") if w not in punctuation) for _ in texts]
        for image_id, texts in captions.items()
    }


def _java_lower(token: str) -> str:
    """``String.toLowerCase(Locale.ENGLISH)``: Python's lower(), except that Java picks the final sigma by word."""
    if "\u03a3" not in token:
        return token.lower()
    chars = [char.lower() for char in token]  # context-free for every character but capital sigma
    for index in (i for i, char in enumerate(token) if char == "\u03a3"):
        start, end = index, index + 1
        while start > 0 and _joins(token, start - 1):
            start -= 1
        while end < len(token) and _joins(token, end):
            end += 1
        final = any(map(_cased, token[start:index])) and not any(map(_cased, token[index + 1 : end]))
        chars[index] = "\u03c2" if final else "\u03c3"
    return "".join(chars)


def _joins(token: str, index: int) -> bool:
    """Whether ``token[index]`` belongs to its neighbours' word, as the JDK's word BreakIterator sees it (nearly)."""
    char = token[index]
    if _IDEOGRAPHIC.match(char):
        return False
    if char.isalnum() or unicodedata.category(char) in _JOINING_CATEGORIES:
        return True
    before, after = token[index - 1 : index], token[index + 1 : index + 2]
    if (char in "'._" or unicodedata.category(char) == "Pd") and _is_letter(before) and _is_letter(after):
        return True
    return char in ".," and before.isdigit() and after.isdigit()


def _is_letter(char: str) -> bool:
    return char.isalpha() and not _IDEOGRAPHIC.match(char)


def _cased(char: str) -> bool:
    return char.islower() or char.isupper() or char.istitle()


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
