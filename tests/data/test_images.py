"""The bad-image policy (every odd and broken file kind) and the preprocessed image cache."""

import os

import numpy as np
import pytest
import torch
from bad_data import BAD, GOOD, SIZE, write_images
from PIL import Image
from torch.utils.data import DataLoader

from captioning.data.cache import ImageCache
from captioning.data.dataset import CaptionDataset, collate, image_transform
from captioning.data.images import load_image, load_resized, resize_image
from captioning.data.records import CaptionRecord, DataWarning
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder)
    return folder


@pytest.mark.parametrize("name", sorted(GOOD))
def test_decodable_images_become_8_bit_rgb(images, name):
    image = load_image(images / name)
    assert image.mode == "RGB"
    expected = SIZE[::-1] if name == "rotated.jpg" else SIZE  # EXIF orientation 6 turns the 40x24 photo upright
    assert image.size == expected


def test_conversions_keep_the_picture(images):
    sixteen = np.asarray(load_image(images / "sixteen.png"))[..., 0].astype(int)
    # a 0..65535 ramp becomes a 0..255 ramp (PIL's plain convert would clip it to nearly all white)
    assert sixteen.min() == 0 and sixteen.max() == 255 and 100 < sixteen.mean() < 155
    rgba = np.asarray(load_image(images / "rgba.png")).astype(int)
    assert (rgba[:, SIZE[0] // 2 :] == 255).all()  # the transparent half is composited over white
    assert rgba[:, : SIZE[0] // 2].std() > 30  # the opaque half keeps its noise
    with Image.open(images / "rotated.jpg") as raw:
        stored = np.asarray(raw.convert("RGB"))
    upright = np.asarray(load_image(images / "rotated.jpg"))
    assert np.abs(upright.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 1  # rotated 90 degrees clockwise
    gray = np.asarray(load_image(images / "gray.jpg"))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("corrupt.jpg", "cannot read image"),
        ("truncated.jpg", "(?i)cannot read image .*truncated"),
        ("empty.jpg", "empty image file"),
        ("missing.jpg", "image file not found"),
    ],
)
def test_unreadable_images_raise_one_line_naming_the_file(images, name, problem):
    assert set(BAD) >= {name}
    with pytest.raises(CaptioningError, match=problem) as error:
        load_image(images / name)
    assert str(images / name) in str(error.value) and "\n" not in str(error.value)


def _records(folder):
    return [CaptionRecord(i, folder / n, ("a caption",), "train") for i, n in enumerate(sorted({**GOOD, **BAD}))]


def test_cache_rows_are_bit_identical_to_decoding_and_record_bad_files(images, tmp_path):
    files = [images / n for n in {**GOOD, **BAD}]
    cache = ImageCache.build(files, tmp_path / "cache", image_size=32, workers=0)
    assert len(cache) == len(files)
    for name in GOOD:
        pixels, problem = cache.lookup(images / name)
        assert problem is None and pixels.dtype == torch.uint8 and pixels.shape == (3, 32, 32)
        assert torch.equal(pixels, resize_image(load_image(images / name), 32))
    for name in ("corrupt.jpg", "truncated.jpg", "empty.jpg"):
        pixels, problem = cache.lookup(images / name)
        assert pixels is None and name in problem
    assert "not found" in cache.entries[str(images / "missing.jpg")][3]
    assert cache.lookup(images / "missing.jpg") is None  # still missing: decoding it reports that, as without a cache
    assert cache.lookup(images / "not_in_cache.jpg") is None
    # reopened from disk it reads the same; at another size it is absent
    again = ImageCache(tmp_path / "cache", 32)
    assert torch.equal(again.lookup(images / "rgb.jpg")[0], cache.lookup(images / "rgb.jpg")[0])
    assert not ImageCache.exists(tmp_path / "cache", 64)
    with pytest.raises(CaptioningError, match="no image cache at size 64"):
        ImageCache(tmp_path / "cache", 64)


def test_a_changed_file_is_decoded_again_not_read_stale(images, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((images / "rgb.jpg").read_bytes())
    cache = ImageCache.build([folder / "a.jpg"], tmp_path / "cache", image_size=16)
    assert cache.lookup(folder / "a.jpg") is not None
    Image.new("RGB", (50, 50), (0, 255, 0)).save(folder / "a.jpg")
    stat = (folder / "a.jpg").stat()
    os.utime(folder / "a.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.lookup(folder / "a.jpg") is None  # the caller decodes the new file


def test_dataset_reads_the_cache_like_the_files_and_skips_bad_images(images, tmp_path):
    records = _records(images)
    vocab = Vocabulary.build(["a caption"])
    cache = ImageCache.build([r.path for r in records], tmp_path / "cache", image_size=32)
    plain = CaptionDataset(records, vocab, image_size=32, max_len=8, sampling="images")
    cached = CaptionDataset(records, vocab, image_size=32, max_len=8, sampling="images", image_cache=cache)
    for index, record in enumerate(records):
        name = record.path.name
        if name in BAD:
            with pytest.warns(DataWarning, match=name):
                assert plain[index] is None
            with pytest.warns(DataWarning, match=name):
                assert cached[index] is None
        else:
            torch.testing.assert_close(cached[index]["image"], plain[index]["image"], rtol=0, atol=0)
            torch.testing.assert_close(plain[index]["image"], image_transform(32)(load_image(record.path)))
    # two worker processes read the memory map (reopened in each: the cache pickles without its array)
    loader = DataLoader(cached, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)  # (the workers' warnings go to their own stderr; the count comes back in the batches)
    assert sum(b.skipped for b in batches) == len(BAD)
    assert sum(len(b.image_ids) for b in batches) == len(GOOD)
    with pytest.raises(ValueError, match="32 px"):
        CaptionDataset(records, vocab, image_size=64, max_len=8, sampling="images", image_cache=cache)


def test_a_batch_of_only_unreadable_images_collates_empty():
    batch = collate([None, None])
    assert batch.skipped == 2 and batch.image_ids == [] and batch.images.shape[0] == 0 and batch.tokens.shape[0] == 0


def test_the_fast_jpeg_path_gives_the_pixels_and_errors_of_the_pil_path(tmp_path):
    """``load_resized`` decodes JPEGs with torchvision's decode_jpeg: the same pixels as PIL's path for every kind of
    JPEG the bad-data fixtures hold (RGB, grey, CMYK, EXIF-rotated), and PIL's one-line errors for broken files."""
    write_images(tmp_path)
    checked = 0
    for path in sorted(tmp_path.iterdir()):
        try:
            expected = resize_image(load_image(path), 48)
        except CaptioningError as error:
            with pytest.raises(CaptioningError) as got:
                load_resized(path, 48)
            assert str(got.value) == str(error)
            continue
        assert torch.equal(load_resized(path, 48), expected), path.name
        checked += path.suffix == ".jpg"
    assert checked >= 4  # rgb, gray, cmyk, rotated (and blank)
