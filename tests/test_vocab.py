import json
import random

import pytest
import torch

from captioning.errors import CaptioningError
from captioning.vocab import SPECIALS, Vocabulary, has_word, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Red circle, left of the BOX.") == ["a", "red", "circle", "left", "of", "the", "box"]
    assert tokenize("  ...  ") == []


def test_build_counts_train_captions_and_orders_deterministically():
    vocab = Vocabulary.build(["a red circle", "a blue circle", "a red box"], min_count=2)
    assert vocab.words == [*SPECIALS, "a", "circle", "red"]
    assert (vocab.pad, vocab.bos, vocab.eos, vocab.unk) == (0, 1, 2, 3)


def test_encode_clips_maps_unknown_and_decodes_back():
    vocab = Vocabulary.build(["a red circle above a blue square"])
    ids = vocab.encode("A red star above a blue square!", max_len=4)
    assert ids[0] == vocab.bos and ids[-1] == vocab.eos and len(ids) == 6
    assert ids[3] == vocab.unk  # "star" was never seen
    assert vocab.decode(ids) == "a red <unk> above"
    assert vocab.decode(torch.tensor([vocab.bos, ids[1], vocab.eos, ids[2]])) == "a"  # stops at <eos>


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["a small green triangle", "a big ball"], min_count=1, counted="all")
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["words"] == vocab.words
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.words == vocab.words and loaded.rule == {"counted": "all", "min_count": 1}
    (tmp_path / "words_only.json").write_text(json.dumps({"words": vocab.words}))  # a file from before rules
    assert Vocabulary.load(tmp_path / "words_only.json").rule is None


# Captions with and without a word: punctuation, symbols, entities, marks, digits, non-Latin letters, odd spaces.
TRICKY = [
    "", " ", "\t\u00a0\u3000", "...", "!?", "- -", "--", "''", "``", '"', "( )", "[ ]", "#", "$", "%", "&", "&amp;",
    "&quot;", "&nbsp;", "*", "/", "@", "_", "__", "\u2026", "\u201c\u201d", "\u00bd", "\u00b2", "\u00ad", "\u0301",
    ":-)", ":D", "'s", "n't", "a", "A.", "5", "\u0665", "\u00e9", "\u03a3", "\u6f22", "\u0130", "\u01c5", "x_y",
    "a.b", "\u2160", "\u2460", "\u00aa", "\u02b0", "\u3005", "\u0e01\u0e34", "\U0001d400", "\u200b", "\x00",
]  # fmt: skip


def test_has_word_is_whether_tokenize_leaves_a_word():
    rng = random.Random(0)
    pieces = [t for t in TRICKY if t] + [" ", "."]
    mixed = ["".join(rng.choices(pieces, k=rng.randint(1, 4))) for _ in range(3000)]
    for caption in [*TRICKY, *mixed]:
        assert has_word(caption) == bool(tokenize(caption)), repr(caption)
    assert [has_word(c) for c in ("a dog.", " ... ", "&", "&amp;", "\u00b2")] == [True, False, False, True, True]


@pytest.mark.parametrize("step", [pytest.param(1, marks=pytest.mark.slow), 13])
def test_has_word_agrees_with_tokenize_on_every_bmp_character(step):
    for code in range(0, 0x10000, step):
        if not 0xD800 <= code < 0xE000:
            assert has_word(chr(code)) == bool(tokenize(chr(code))), hex(code)


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CaptioningError, match=r"bad\.json"):
        Vocabulary.load(tmp_path / "bad.json")
