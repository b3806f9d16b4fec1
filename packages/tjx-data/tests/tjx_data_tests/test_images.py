import numpy as np
import pytest

from tjx.data import DataError, ImageDataset, image_batches, load_digits, load_image_dataset
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
