import numpy as np
import pytest

from tjx.data import (
    DataError,
    ImageDataset,
    ImageLoader,
    image_batches,
    load_digits,
    load_image_dataset,
)
from tjx.data.images import images_from_rows


def test_digits_split_is_fixed_disjoint_and_complete():
    train, val, full = load_digits("train"), load_digits("validation"), load_digits("all")
    assert (len(train), len(val), len(full)) == (1437, 360, 1797)
    assert train.images.shape == (1437, 8, 8, 1) and train.images.dtype == np.float32
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0 and train.num_classes == 10
    # every image of "all" is in exactly one split (compare as byte strings)
    key = lambda d: sorted(bytes(x) + bytes([y]) for x, y in zip(d.images, d.labels, strict=False))
    assert sorted(key(train) + key(val)) == key(full)
    np.testing.assert_array_equal(load_digits("train").labels, train.labels)  # deterministic
    with pytest.raises(DataError, match="split"):
        load_digits("test")
    assert load_image_dataset("digits", split="validation").images.shape == (360, 8, 8, 1)


def test_image_batches_cover_an_epoch():
    data = load_digits("validation")
    batches = list(image_batches(data, 64, seed=1, epoch=0))
    assert len(batches) == 360 // 64 and batches[0]["images"].shape == (64, 8, 8, 1)
    labels = np.concatenate([b["labels"] for b in image_batches(data, 64, seed=1, shuffle=False)])
    np.testing.assert_array_equal(labels, data.labels)
    other = next(image_batches(data, 64, seed=1, epoch=1))
    assert not np.array_equal(other["labels"], batches[0]["labels"])
    with pytest.raises(ValueError):
        next(image_batches(data, 0, seed=1))


def test_rows_to_dataset_and_errors():
    rng = np.random.default_rng(0)
    rows = [
        {"image": rng.integers(0, 256, (4, 4), dtype=np.uint8), "label": i % 3} for i in range(5)
    ]
    data = images_from_rows(rows, "image", "label", "toy")
    assert data.images.shape == (5, 4, 4, 1) and data.num_classes == 3
    np.testing.assert_allclose(data.images[2, ..., 0], rows[2]["image"] / 255.0, rtol=1e-6)
    with pytest.raises(DataError, match="columns"):
        images_from_rows([{"img": 1}], "image", "label", "toy")
    with pytest.raises(DataError, match="empty"):
        images_from_rows([], "image", "label", "toy")
    with pytest.raises(DataError, match=r"\[N, H, W, C\]"):
        ImageDataset(np.zeros((2, 3)), np.zeros(2), 1)
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        load_image_dataset("uoft-cs/cifar10")


def _toy(n: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (n, 3, 3, 1)).astype(np.float32)
    return ImageDataset(images, rng.integers(0, 10, n).astype(np.int32), 10)


def test_evaluation_batches_can_drop_the_partial_one():
    data = _toy(10, 3)
    kept = list(image_batches(data, 4, seed=0, shuffle=False))
    dropped = list(image_batches(data, 4, seed=0, shuffle=False, drop_remainder=True))
    assert [len(b["labels"]) for b in kept] == [4, 4, 2]
    assert [len(b["labels"]) for b in dropped] == [4, 4]
    np.testing.assert_array_equal(dropped[1]["images"], data.images[4:8])
    shuffled = list(image_batches(data, 4, seed=5, drop_remainder=False))
    assert sorted(np.concatenate([b["labels"] for b in shuffled])) == sorted(data.labels)


def test_image_loader_draws_image_batches_epoch_after_epoch_and_resumes_exactly():
    data = _toy(10, 4)
    loader = ImageLoader(data, 4, seed=1)
    drawn = [next(loader) for _ in range(5)]  # 2 full batches per epoch: epochs 0, 1, then 2
    # Reference: one epoch of image_batches per epoch, the partial batch dropped.
    expected = [b for e in range(3) for b in image_batches(data, 4, seed=1, epoch=e)][:5]
    for got, want in zip(drawn, expected, strict=True):
        np.testing.assert_array_equal(got["images"], want["images"])
        np.testing.assert_array_equal(got["labels"], want["labels"])
    state = loader.state_dict()
    assert state == {"epoch": 2, "pos": 4}
    rest = [next(loader)["labels"] for _ in range(4)]
    again = ImageLoader(data, 4, seed=1)
    again.load_state_dict(state)
    assert iter(again) is again
    np.testing.assert_array_equal(np.stack([next(again)["labels"] for _ in range(4)]), rest)


def test_image_loader_rejects_bad_sizes_and_states():
    data = _toy(6, 5)
    for size in (0, 7):
        with pytest.raises(DataError, match=r"batch_size must be in \[1, 6\]"):
            ImageLoader(data, size, seed=0)
    loader = ImageLoader(data, 6, seed=0)
    with pytest.raises(DataError, match="outside this dataset"):
        loader.load_state_dict({"epoch": 0, "pos": 7})
