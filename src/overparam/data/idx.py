"""MNIST-format IDX files read from a local folder (MNIST, Fashion-MNIST, KMNIST, ...).

IDX layout (LeCun's format): a 4-byte big-endian magic number -- two zero bytes, a type code,
the number of dimensions -- then one big-endian uint32 per dimension, then the values in
row-major order. Nothing is downloaded; the four standard files must be in data_dir,
optionally gzipped.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .checks import check_bool, check_int
from .dataset import Dataset
from .errors import DataError

# IDX type code -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def load_mnist(
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    data_dir: str | Path | None = None,
    flatten: bool = True,
    n_classes: int | None = None,
) -> Dataset:
    """The four MNIST IDX files from ``data_dir``: pixels scaled to [0, 1], labels int64.

    Inputs are flattened to rows*cols features (784 for MNIST), or shaped (n, 1, rows, cols)
    with flatten=False. n_train / n_test keep the first examples of each file, the usual
    convention, so ``seed`` has no effect. n_classes defaults to the largest label + 1.
    """
    if data_dir is None:
        raise DataError(f"dataset 'mnist' needs data_dir=<folder with {', '.join(MNIST_FILES.values())}>")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"data directory not found: {folder}")
    flatten = check_bool("flatten", flatten)
    files = {role: _find_idx_file(folder, stem) for role, stem in MNIST_FILES.items()}
    splits = {}
    for split in ("train", "test"):
        images = _read_mnist_part(files[f"{split}_images"], IMAGES_MAGIC, "unsigned-byte images, 3 dimensions")
        labels = _read_mnist_part(files[f"{split}_labels"], LABELS_MAGIC, "unsigned-byte labels, 1 dimension")
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images'].name} holds {len(images)} images but "
                f"{files[f'{split}_labels'].name} holds {len(labels)} labels"
            )
        splits[split] = (images, labels)
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DataError(
            f"train images are {splits['train'][0].shape[1:]} pixels but test images are {splits['test'][0].shape[1:]}"
        )
    largest = max((int(labels.max()) for _, labels in splits.values() if labels.size), default=0)
    n_classes = largest + 1 if n_classes is None else check_int("n_classes", n_classes, low=largest + 1)

    def as_inputs(images: np.ndarray) -> torch.Tensor:
        scaled = images.astype(np.float32) / 255.0  # ubyte pixels -> [0, 1]
        shape = (len(images), -1) if flatten else (len(images), 1, *images.shape[1:])
        return torch.from_numpy(scaled.reshape(shape))

    full = Dataset(
        name="mnist",
        X_train=as_inputs(splits["train"][0]),
        y_train=torch.from_numpy(splits["train"][1].astype(np.int64)),
        X_test=as_inputs(splits["test"][0]),
        y_test=torch.from_numpy(splits["test"][1].astype(np.int64)),
        n_classes=n_classes,
        meta={
            "source": "IDX files",
            "data_dir": str(folder.resolve()),
            "files": {role: path.name for role, path in files.items()},
            "image_shape": list(splits["train"][0].shape[1:]),
            "pixel_scale": "x/255",
            "flatten": flatten,
        },
    )
    return full.subset(n_train, n_test)


def mnist_sizes(data_dir: str | Path) -> tuple[int, int]:
    """(training, test) examples of the MNIST files in ``data_dir``, from the label files' headers alone."""
    folder = Path(data_dir).expanduser()
    sizes = []
    for role in ("train_labels", "test_labels"):
        path = _find_idx_file(folder, MNIST_FILES[role])
        try:
            with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
                header = handle.read(8)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"cannot read {path}: {error}") from None
        if len(header) < 8 or struct.unpack(">I", header[:4])[0] != LABELS_MAGIC:
            raise DataError(f"{path.name}: not an IDX label file (magic number 0x{LABELS_MAGIC:08X} expected)")
        sizes.append(struct.unpack(">I", header[4:8])[0])
    return sizes[0], sizes[1]


def read_idx(path: str | Path) -> np.ndarray:
    """Any IDX file (plain or .gz) as a numpy array in native byte order."""
    return _parse_idx(_read_bytes(Path(path)), Path(path).name)[1]


def _find_idx_file(folder: Path, stem: str) -> Path:
    # Some mirrors spell the names with a dot (train-images.idx3-ubyte); accept both spellings.
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"data file not found: {folder / stem} (also looked for {stem}.gz)")


def _read_mnist_part(path: Path, expected_magic: int, meaning: str) -> np.ndarray:
    magic, values = _parse_idx(_read_bytes(path), path.name)
    if magic != expected_magic:
        raise DataError(f"{path.name}: IDX magic number 0x{magic:08X}, expected 0x{expected_magic:08X} ({meaning})")
    return values


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {error}") from None


def _parse_idx(raw: bytes, source: str) -> tuple[int, np.ndarray]:
    """(magic number, values) after checking the header against the file's length."""
    if len(raw) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{magic:08X}; expected 0x0000, a type code "
            f"({', '.join(f'0x{code:02X}' for code in IDX_TYPES)}) and a dimension count >= 1"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{source}: truncated IDX header ({len(raw)} bytes, need {header_size} for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        raise DataError(
            f"{source}: IDX header gives dimensions {list(dims)} ({expected} bytes of data) but the file holds {found}"
        )
    values = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header_size).reshape(dims)
    return magic, values.astype(dtype.newbyteorder("="))
