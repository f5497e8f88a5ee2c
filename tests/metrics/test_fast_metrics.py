"""Fast metrics against pycocoevalcap on a 1,000-image corpus: the Python PTB tokenizer, vectorized CIDEr-D, scorers.

The tokenizer check runs Java once over the whole corpus (candidates and references); the metric checks compare
numbers on the Python-tokenized corpus and need no JVM (METEOR aside). tests/metrics/test_scorers.py holds the golden
metric numbers and the input checks; this file adds scale and messy text. Slow: every BMP character through both
tokenizers, and METEOR on the whole corpus.
"""

import random
import shutil
from collections import defaultdict

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from captioning.metrics import bleu, cider_d, coco_scores, meteor, ptb_tokenize, rouge_l
from captioning.metrics.cider import CiderD
from captioning.metrics.ptb import LETTER_OR_DIGIT
from captioning.metrics.tokenize import has_ptb_tokens

requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="the Java PTBTokenizer is the reference")

IMAGES = 1000
SUBJECTS = [
    "a man", "a woman", "two dogs", "the cat", "a group of people", "an old café owner", "a young girl", "Mr. Smith",
    "the U.S. team", "a 5-year-old boy", "three children", "a black-and-white dog", "St. Mary's choir", "Dr. Who",
    "a chef from Zürich", "a naïve tourist", "le garçon", "Σωκράτης", "Иван", "寿司職人", "someone's grandma",
]  # fmt: skip
VERBS = [
    "is riding", "rides", "sits on", "is holding", "holds", "is eating", "eats", "looks at", "stands next to",
    "is playing with", "doesn't like", "can't reach", "won't leave", "isn't near", "is gonna throw", "cannot see",
    "has", "'s got", "jumps over", "walks -- slowly -- past", "flies",
]  # fmt: skip
OBJECTS = [
    "a surfboard", "a wave", "a pizza", "a slice of pizza", "a hot-dog", "the red frisbee", "crème brûlée",
    "a jalapeño", "a 3.5 inch screen", "1,000 balloons", "a (very) big kite", "his dog's bone", "the children's toys",
    "an iPhone", "a T-shirt", '"stop" sign', "a sign that says 'open'", "an e-mail", "the 10:30 train",
    "½ a sandwich", "the letter A.", "a well-known statue", "the dogs' ball", "[two] cups", "50% of the cake",
    "a $5 bill", "rock'n'roll records", "“fresh” bread", "the 1990s car", "Ελληνικά books", "日本語 menu",
]  # fmt: skip
PLACES = [
    "on the beach", "in a kitchen", "at St. Peter's Square", "near the U.S. Capitol", "in São Paulo",
    "on top of a hill", "next to a café", "in the rain", "at 5 p.m.", "with friends, etc.", "in front of a T.V.",
    "on Jan. 5", "by the lake's edge", "at the pizza place", "", "", "",
]  # fmt: skip
ENDINGS = [".", ".", ".", "", "", " .", "!", "?", "...", " …", "!!", ".'", ")", ":-)"]
FILLER = ["a", "the", "dog", "dog", "man", "on", "on", "of", "a", "a", "pizza"]


def caption(rng: random.Random) -> str:
    """A caption from a template: mixed case, punctuation, contractions, numbers, abbreviations, non-ASCII."""
    text = " ".join(part for part in (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)) if part)
    if place := rng.choice(PLACES):
        text += ("," if rng.random() < 0.2 else "") + " " + place
    text += rng.choice(ENDINGS)
    style = rng.random()
    if style < 0.5:
        text = text[0].upper() + text[1:]
    elif style < 0.55:
        text = text.upper()
    elif style < 0.6:
        text = text.title()
    if rng.random() < 0.1:  # repeated words
        words = text.split()
        index = rng.randrange(len(words))
        text = " ".join(words[:index] + [words[index]] * rng.randint(2, 4) + words[index + 1 :])
    return text


def build_corpus(seed: int, images: int) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Raw candidates and 5 raw references per image; some candidates are empty, copies, or repeat one word."""
    rng = random.Random(seed)
    candidates, references = {}, {}
    for image_id in range(images):
        references[image_id] = [caption(rng) for _ in range(5)]
        kind = rng.random()
        if image_id % 50 == 7:
            candidates[image_id] = ""
        elif kind < 0.2:
            candidates[image_id] = rng.choice(references[image_id])
        elif kind < 0.3:
            candidates[image_id] = " ".join(rng.choices(FILLER, k=rng.randint(1, 12)))
        else:
            candidates[image_id] = caption(rng)
    return candidates, references


@pytest.fixture(scope="module")
def raw_corpus() -> tuple[dict[int, str], dict[int, list[str]]]:
    return build_corpus(seed=0, images=IMAGES)


def both_sides(raw_corpus) -> dict[int, list[str]]:
    """Each image's references followed by its candidate: the whole corpus as one tokenizer input."""
    candidates, references = raw_corpus
    return {image_id: [*references[image_id], candidates[image_id]] for image_id in candidates}


@pytest.fixture(scope="module")
def corpus(raw_corpus) -> tuple[dict[int, str], dict[int, list[str]]]:
    """The corpus tokenized by the Python backend (equal to Java's, see test_python_tokenizer_equals_java)."""
    tokenized = ptb_tokenize(both_sides(raw_corpus), backend="python")
    return {i: texts[-1] for i, texts in tokenized.items()}, {i: texts[:-1] for i, texts in tokenized.items()}


def coco_format(corpus) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    candidates, references = corpus
    return {i: [candidates[i]] for i in sorted(candidates)}, {i: references[i] for i in sorted(candidates)}


def test_corpus_has_the_hard_cases(corpus, raw_corpus):
    candidates, references = corpus
    assert len(references) == IMAGES and all(len(refs) == 5 for refs in references.values())
    assert sum(text == "" for text in candidates.values()) >= IMAGES // 50
    tokens = {token for refs in references.values() for ref in refs for token in ref.split()}
    assert {"n't", "'s", "u.s.", "café", "-lrb-", "3.5", "1,000", "gon"} <= tokens
    assert any(not text.isascii() for text in raw_corpus[0].values())


@requires_java
def test_python_tokenizer_equals_java(raw_corpus):
    lines = both_sides(raw_corpus)  # 6,000 captions, one JVM
    assert ptb_tokenize(lines, backend="python") == ptb_tokenize(lines)


def test_python_tokenizer_needs_no_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ptb_tokenize({1: ["A Red circle, left of the BOX."], 2: []}, backend="python") == {
        1: ["a red circle left of the box"],
        2: [],
    }
    with pytest.raises(ValueError, match="backend"):
        ptb_tokenize({1: ["a"]}, backend="perl")  # type: ignore[arg-type]


# Recorded from Stanford CoreNLP 3.4.1 through pycocoevalcap 1.2: raw lines in file order -> ptb_tokenize output.
GOLDEN_LINES = [
    ("Don't stop -- it's (very) BIG!", "do n't stop it 's -lrb- very -rrb- big"),
    ("gonna wanna cannot dunno 'tis", "gon na wan na can not dunno 't is"),
    ("I can't won't ain't y'all o'clock rock 'n' roll", "i ca n't wo n't ai n't y' all o'clock rock 'n' roll"),
    ("3.5 1/2 5 7/8 U.S. e.g. a.m. 12:30. 1,000 -5", "3.5 1/2 5\u00a07/8 u.s. e.g. a.m. 12:30 1,000 -5"),
    ("\"quoted\" \u201ccurly\u201d \u2018single\u2019 `` x ''", "quoted curly single x"),
    ("it's 3.5 ft. long, approx. 10 ca. 5", "it 's 3.5 ft. long approx 10 ca. 5"),
    ("x :) c++ <b> [a] {b} € £ ¢ … ΣΟΦΟΣ İ", "x :-rrb- c++ <b> -lsb- a -rsb- -lcb- b -rcb- $ # cents σοφος i\u0307"),
    ("5photo.jpg hello.world #tag @me a@b.com www.x.org", "5photo.jpg hello.world #tag @me a@b.com www.x.org"),
    ("the letter A.", "the letter a"),  # the lexer looks at the next line: "The" makes this period a sentence end
    ("The end, the letter A.", "the end the letter a."),  # last line: nothing follows
]


def test_python_tokenizer_golden_lines():
    lines = {0: [line for line, _ in GOLDEN_LINES]}
    assert ptb_tokenize(lines, backend="python") == {0: [tokens for _, tokens in GOLDEN_LINES]}


@requires_java
def test_golden_lines_are_javas():
    assert ptb_tokenize({0: [line for line, _ in GOLDEN_LINES]}) == {0: [tokens for _, tokens in GOLDEN_LINES]}


@requires_java
@pytest.mark.slow
def test_python_tokenizer_equals_java_on_every_bmp_character():
    """Each BMP character alone, between letters, between digits and after a space: 254k lines, one Java call."""
    breaks = set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # str.splitlines() would join these lines
    chars = [chr(code) for code in range(1, 0x10000) if not 0xD800 <= code < 0xE000 and chr(code) not in breaks]
    lines = {0: [text for char in chars for text in (char, f"a{char}b", f"1{char}2", f"x {char}")]}
    assert ptb_tokenize(lines, backend="python") == ptb_tokenize(lines)


# Captions that PTB tokenization empties, or nearly: pycocoevalcap's PUNCTUATIONS ("!" but not "!!", "-LRB-" but
# not the "-lrb-" that -lowerCase makes), entities that become punctuation, symbols it keeps, marks and odd spaces.
NEAR_EMPTY = [
    "", " ", "\t\u00a0\u3000", "...", "....", ". . .", "!", "!!", "?!", "-", "--", "---", "- -", "''", "``", '"', "'",
    "`", ",", ";:", "( )", "[", "{ }", "-LRB-", "#", "$", "%", "&", "&amp;", "&quot;", "&apos;", "&nbsp;", "&mdash;",
    "&ndash; .", "&lt;", "&#39;", "*", "/", "@", "_", "=", "\u2026", "\u201c\u201d", "\u2018 \u2019", "\u00ab\u00bb",
    "\u2013", "\u00bd", "\u00b2", "\u00a2", "\u00ad", "\u0301", "\u200b", "\x00", "\x7f", "\u037f", ":-)", ":D",
    "'s", "n't", "a", "A.", "5", "\u0665", "\u00e9", "\u6f22", "\u3005", "\U0001d400", "a &quot;", "&quot;a&quot;",
]  # fmt: skip


def test_has_ptb_tokens_is_whether_the_python_tokenizer_leaves_a_token():
    rng = random.Random(0)
    pieces = [t for t in NEAR_EMPTY if t] + [" ", " ", ".", "&", ";", "quot", "amp"]
    mixed = ["".join(rng.choices(pieces, k=rng.randint(1, 5))) for _ in range(3000)]
    for caption in [*NEAR_EMPTY, *mixed]:
        assert has_ptb_tokens(caption) == (ptb_tokenize({0: [caption]}, backend="python")[0] != [""]), repr(caption)
    assert not has_ptb_tokens("&quot; ... &nbsp;") and has_ptb_tokens("!!") and has_ptb_tokens("( )")


@requires_java
def test_has_ptb_tokens_is_whether_pycocoevalcaps_tokenizer_leaves_a_token():
    lines = [text for caption in NEAR_EMPTY for text in (caption, "x")]  # each one after and before a word
    tokens = ptb_tokenize({0: lines})[0][::2]
    assert [has_ptb_tokens(caption) for caption in NEAR_EMPTY] == [t != "" for t in tokens]


def test_every_letter_or_digit_alone_keeps_a_ptb_token():
    """has_ptb_tokens trusts a letter or digit (without "&") to keep a token: each such BMP character alone does."""
    chars = [chr(code) for code in range(0x10000) if LETTER_OR_DIGIT.match(chr(code))]
    assert len(chars) > 45_000
    tokenized = ptb_tokenize({0: chars}, backend="python")[0]
    assert [char for char, tokens in zip(chars, tokenized, strict=True) if not tokens] == []


def test_fast_cider_equals_pycocoevalcap(corpus):
    res, gts = coco_format(corpus)
    score, scores = Cider().compute_score(gts, res)
    fast_score, fast_scores = CiderD().score({i: texts[0] for i, texts in res.items()}, gts)
    assert fast_score == pytest.approx(float(score), rel=0, abs=1e-12)
    assert fast_scores == pytest.approx(list(scores), rel=0, abs=1e-12)
    assert cider_d(*corpus) == (fast_score, fast_scores)
    assert fast_score > 0 and max(fast_scores) > 1  # copies of a reference score high, empty candidates 0
    assert all(fast_scores[i] == 0 for i in range(7, IMAGES, 50))


def test_scorers_equal_pycocoevalcap(corpus):
    res, gts = coco_format(corpus)
    corpus_bleu, per_image_bleu = bleu(*corpus)
    score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert corpus_bleu[f"Bleu_{n + 1}"] == pytest.approx(score[n], rel=0, abs=1e-9)
        assert per_image_bleu[f"Bleu_{n + 1}"] == pytest.approx(scores[n], rel=0, abs=1e-9)
    score, scores = Rouge().compute_score(gts, res)
    assert rouge_l(*corpus) == (pytest.approx(score, rel=0, abs=1e-9), pytest.approx(list(scores), rel=0, abs=1e-9))


@requires_java
@pytest.mark.slow  # two METEOR JVMs, about 10 s each; tests/metrics/test_scorers.py checks METEOR on 54 images
def test_meteor_equals_pycocoevalcap(corpus):
    res, gts = coco_format(corpus)
    direct = Meteor()
    try:
        score, scores = direct.compute_score(gts, res)
    finally:
        direct.meteor_p.kill()
        direct.meteor_p.communicate()
    ours, per_image = meteor(*corpus)
    assert ours == pytest.approx(score, rel=0, abs=1e-9)
    assert per_image == pytest.approx(list(scores), rel=0, abs=1e-9)


@requires_java
def test_coco_scores_with_python_tokenizer(raw_corpus):
    """End to end, from raw text: two tokenizer calls per backend (references, then candidates), same numbers."""
    metrics = ("Bleu", "ROUGE_L", "CIDEr")
    assert coco_scores(*raw_corpus, metrics=metrics, tokenizer="python") == coco_scores(*raw_corpus, metrics=metrics)


class _CorpusSized(list):
    """pycocoevalcap takes N = len(crefs): a list of the scored references that reports the corpus size instead."""

    def __init__(self, items: list, size: int):
        super().__init__(items)
        self.size = size

    def __len__(self) -> int:
        return self.size


def pycocoevalcap_cider_with_corpus(candidates, references, corpus) -> tuple[float, list[float]]:
    """pycocoevalcap's CiderScorer with its document frequencies counted in ``corpus`` and N = len(corpus)."""
    counter = CiderScorer()
    for refs in corpus.values():
        counter += (None, refs)
    counter.compute_doc_freq()
    scorer = CiderScorer()
    for image_id in sorted(candidates):
        scorer += (candidates[image_id], references[image_id])
    scorer.document_frequency = defaultdict(float, counter.document_frequency)
    scorer.crefs = _CorpusSized(scorer.crefs, len(corpus))
    scores = scorer.compute_cider()
    return float(np.mean(scores)), [float(value) for value in scores]


def test_cider_with_training_document_frequencies(corpus):
    candidates, references = corpus
    _, train = build_corpus(seed=1, images=3 * IMAGES)
    train = ptb_tokenize(train, backend="python")
    expected_score, expected_scores = pycocoevalcap_cider_with_corpus(candidates, references, train)
    scorer = CiderD(train)
    for _ in range(2):  # the precomputed frequencies are reused, not updated
        score, scores = scorer.score(candidates, references)
        assert score == pytest.approx(expected_score, rel=0, abs=1e-12)
        assert scores == pytest.approx(expected_scores, rel=0, abs=1e-12)
    assert cider_d(candidates, references, document_frequency=train) == (score, scores)
    default_score, default_scores = CiderD().score(candidates, references)
    assert abs(score - default_score) > 1e-4
    assert max(abs(a - b) for a, b in zip(scores, default_scores, strict=True)) > 0.05
    # Words and n-grams the corpus never saw get the highest IDF, log N.
    unseen = ({1: "zzz qqq", 2: "zzz"}, {1: ["zzz qqq"], 2: ["zzz qqq", "qqq"]})
    expected_score, expected_scores = pycocoevalcap_cider_with_corpus(*unseen, train)
    score, scores = scorer.score(*unseen)
    assert score == pytest.approx(expected_score, rel=0, abs=1e-12)
    assert scores == pytest.approx(expected_scores, rel=0, abs=1e-12)


def test_cider_d_arguments():
    with pytest.raises(ValueError, match="same image ids"):
        CiderD().score({1: "a"}, {2: ["a"]})
    with pytest.raises(ValueError, match="at least one reference"):
        CiderD().score({1: "a", 2: "b"}, {1: ["a"], 2: []})
    with pytest.raises(ValueError, match="no candidates"):
        CiderD().score({}, {})
    with pytest.raises(ValueError, match="sigma"):
        CiderD(n=4, sigma=0)
    with pytest.raises(ValueError, match="empty"):
        CiderD({})
    assert CiderD().score({"b": "x y", "a": ""}, {"b": ["x y"], "a": ["x y"]})[1][1] == 0.0  # order of candidates
