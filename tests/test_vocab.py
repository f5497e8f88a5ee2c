import json

import pytest
import torch

from captioning.errors import CaptioningError
from captioning.vocab import SPECIALS, Vocabulary, tokenize


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
    vocab = Vocabulary.build(["a small green triangle", "a big ball"])
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["words"] == vocab.words
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocab.words


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CaptioningError, match=r"bad\.json"):
        Vocabulary.load(tmp_path / "bad.json")
