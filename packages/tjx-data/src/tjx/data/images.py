"""Image classification data for ViT: scikit-learn's 8×8 ``digits`` offline, HF datasets online;
one epoch of batches (:func:`image_batches`) or endless, resumable training batches
(:class:`ImageLoader`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tjx.data.errors import DataError

__all__ = ["ImageDataset", "ImageLoader", "image_batches", "load_digits", "load_image_dataset"]

DIGITS_VALIDATION = 360  # of 1,797 images, after a fixed permutation (seed 0)


@dataclass(frozen=True)
class ImageDataset:
    """Images ``float32 [N, H, W, C]`` in [0, 1] and labels ``int32 [N]``."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"images must be [N, H, W, C] with N labels, got {self.images.shape} "
                f"and {self.labels.shape}"
            )
        if len(self.labels) == 0:
            raise DataError("empty image dataset")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_digits(split: str = "train") -> ImageDataset:
    """scikit-learn's bundled 8×8 handwritten digits (offline), as ``[N, 8, 8, 1]`` in [0, 1].

    A fixed split: after ``default_rng(0).permutation(1797)`` the last 360 images are
    ``"validation"``, the first 1,437 ``"train"``; ``"all"`` is every image in sklearn's order.
    """
    try:
        # Lazy, and an extra (`pip install tjx-data[images]`): sklearn is heavy and only ViT
        # needs it.
        from sklearn.datasets import load_digits as sk_load_digits  # pants: no-infer-dep
    except ImportError as error:  # pragma: no cover - depends on the install
        raise DataError("load_digits needs scikit-learn: pip install 'tjx-data[images]'") from error

    if split not in ("train", "validation", "all"):
        raise DataError(f"split must be 'train', 'validation' or 'all', got {split!r}")
    data = sk_load_digits()
    images = (np.asarray(data.images, dtype=np.float32) / 16.0)[..., None]
    labels = np.asarray(data.target, dtype=np.int32)
    if split != "all":
        order = np.random.default_rng(0).permutation(len(labels))
        cut = len(labels) - DIGITS_VALIDATION
        chosen = order[:cut] if split == "train" else order[cut:]
        images, labels = images[chosen], labels[chosen]
    return ImageDataset(images, labels, num_classes=10)


def load_image_dataset(
    name: str,
    *,
    split: str = "train",
    image_key: str = "image",
    label_key: str = "label",
    **kwargs: Any,
) -> ImageDataset:
    """An HF image classification dataset by name (e.g. ``"uoft-cs/cifar10"``), in memory.

    Images are converted to ``float32`` in [0, 1] with a channel axis; ``"digits"`` gives
    :func:`load_digits`. Extra keyword arguments go to ``datasets.load_dataset``.
    """
    if name == "digits":
        return load_digits(split)
    import datasets  # lazy

    from tjx.data.sources.hub import hub_error

    path, _, config = name.partition(":")
    try:
        table = datasets.load_dataset(path, config or None, split=split, **kwargs)
    except Exception as exc:
        raise hub_error(name, exc) from exc
    return images_from_rows(table, image_key, label_key, name)  # pragma: no cover - network


def images_from_rows(rows: Any, image_key: str, label_key: str, name: str) -> ImageDataset:
    """Stack rows of ``{image_key: PIL image or array, label_key: int}`` into an ImageDataset."""
    images, labels = [], []
    for row in rows:
        if image_key not in row or label_key not in row:
            raise DataError(f"{name}: rows need {image_key!r} and {label_key!r} columns")
        image = np.asarray(row[image_key])
        images.append(image[..., None] if image.ndim == 2 else image)
        labels.append(int(row[label_key]))
    if not images:
        raise DataError(f"{name}: empty image dataset")
    stacked = np.stack(images)
    scale = 255.0 if np.issubdtype(stacked.dtype, np.integer) else 1.0
    labels_arr = np.asarray(labels, dtype=np.int32)
    return ImageDataset((stacked / scale).astype(np.float32), labels_arr, int(labels_arr.max()) + 1)


def image_batches(
    data: ImageDataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of ``{"images", "labels"}`` batches, order from ``default_rng([seed, epoch])``.

    Parameters
    ----------
    data : ImageDataset
        The images and labels.
    batch_size : int
        Images per batch (>= 1).
    seed, epoch : int
        The shuffled order of this epoch (unused without ``shuffle``).
    shuffle : bool
        Shuffled (training) or the dataset's order (evaluation).
    drop_remainder : bool, optional
        Drop the last incomplete batch; by default when shuffling, not otherwise. Evaluation
        that compiles one batch shape passes ``True``.

    Yields
    ------
    dict[str, np.ndarray]
        ``images`` ``[b, H, W, C]`` and ``labels`` ``[b]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    drop = shuffle if drop_remainder is None else drop_remainder
    stop = n - n % batch_size if drop else n
    for start in range(0, stop, batch_size):
        chosen = order[start : start + batch_size]
        yield {"images": data.images[chosen], "labels": data.labels[chosen]}


class ImageLoader:
    """Endless shuffled epochs of :func:`image_batches` over an in-memory dataset, resumable.

    Epoch ``e`` is ``image_batches(data, batch_size, seed=seed, epoch=e)``: every batch full, a
    new order each epoch. The position is ``(epoch, pos)``; ``state_dict``/``load_state_dict``
    make a resumed run draw exactly the batches an uninterrupted one would have.

    Parameters
    ----------
    data : ImageDataset
        The training images.
    batch_size : int
        Images per batch, in ``[1, len(data)]``.
    seed : int
        Seeds every epoch's order.
    """

    def __init__(self, data: ImageDataset, batch_size: int, *, seed: int) -> None:
        if not 1 <= batch_size <= len(data):
            raise DataError(
                f"batch_size must be in [1, {len(data)}] (the images), got {batch_size}",
                argument="batch_size",
            )
        self._data, self._batch, self._seed = data, batch_size, seed
        self._epoch, self._pos = 0, 0
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation) cached

    def __iter__(self) -> ImageLoader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._pos + self._batch > len(self._data):
            self._epoch, self._pos = self._epoch + 1, 0
        if self._order is None or self._order[0] != self._epoch:
            order = np.random.default_rng([self._seed, self._epoch]).permutation(len(self._data))
            self._order = (self._epoch, order)
        chosen = self._order[1][self._pos : self._pos + self._batch]
        self._pos += self._batch
        return {"images": self._data.images[chosen], "labels": self._data.labels[chosen]}

    def state_dict(self) -> dict[str, int]:
        """JSON-serialisable position: ``{"epoch", "pos"}``."""
        return {"epoch": self._epoch, "pos": self._pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` (a ``state_dict()`` of a loader over the same data)."""
        epoch, pos = int(state["epoch"]), int(state["pos"])
        if epoch < 0 or not 0 <= pos <= len(self._data):
            raise DataError(f"image loader state {state!r} is outside this dataset")
        self._epoch, self._pos = epoch, pos
