import os

import pytest
import torch

from trainables.data import (
    BatchStream,
    DatasetUnavailable,
    Split,
    load_data,
    prepare_dataset,
    to_model_scale,
)


def test_eps_scale():
    assert to_model_scale(0.3) == pytest.approx(0.6)


def test_synthetic_splits_are_in_range_and_fixed():
    a = load_data("synthetic", torch.device("cpu"), val_size=100, train_subset=200)
    b = load_data("synthetic", torch.device("cpu"), val_size=100, train_subset=200)
    assert (len(a.train), len(a.val)) == (200, 100)
    assert a.train.x.shape[1:] == (1, 32, 32)
    assert a.train.x.min() >= -1 and a.train.x.max() <= 1
    assert torch.equal(a.val.x, b.val.x), "the validation split does not depend on anything else"


def test_batch_stream_resumes_exactly():
    split = Split(torch.arange(50.0).view(50, 1, 1, 1), torch.arange(50))
    stream = BatchStream(split, 8, seed=1)
    first = [stream.next()[1] for _ in range(9)]  # crosses an epoch boundary
    state = stream.state_dict()
    tail = [stream.next()[1] for _ in range(5)]
    other = BatchStream(split, 8, seed=99)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(tail, [other.next()[1] for _ in range(5)]))
    assert stream.batches_per_epoch == 6
    epoch = torch.cat(first[:6])
    assert len(set(epoch.tolist())) == 48, "one epoch draws without replacement"


def test_batch_larger_than_split_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        BatchStream(Split(torch.zeros(4, 1, 1, 1), torch.zeros(4)), 8, seed=0)


def test_missing_dataset_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried ...\nno network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DatasetUnavailable) as info:
        prepare_dataset("mnist", tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert "MNIST" in message and str(tmp_path / "empty") in message and "--data-dir" in message


def test_read_only_root_is_mirrored_not_written(tmp_path, mnist_root, monkeypatch):
    """A read-only dataset folder is used through links in the cache and never written."""
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(tmp_path / "cache"))
    before = sorted(p.name for p in (mnist_root / "MNIST" / "raw").iterdir())
    if os.access(mnist_root, os.W_OK) and mnist_root.stat().st_mode & 0o222:
        pytest.skip("the MNIST root is writable here")
    folder = prepare_dataset("mnist", mnist_root)
    assert str(folder).startswith(str(tmp_path / "cache"))
    assert sorted(p.name for p in (mnist_root / "MNIST" / "raw").iterdir()) == before
    data = load_data("mnist", torch.device("cpu"), data_dir=mnist_root)
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.train.x.shape[1:] == (1, 32, 32)
    assert data.train.x[:, :, :2].max() == -1.0, "2-pixel padding at the background value"


def test_gtsrb_is_resized_to_32x32_rgb(tmp_path, monkeypatch):
    """A miniature GTSRB tree as torchvision lays it out (PPM files of varying sizes)."""
    from PIL import Image

    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "root" / "gtsrb" / "GTSRB"
    rng = torch.Generator().manual_seed(0)
    for label in range(3):
        folder = base / "Training" / f"{label:05d}"
        folder.mkdir(parents=True)
        for i in range(4):
            size = 25 + 7 * i
            pixels = torch.randint(0, 256, (size, size + 3, 3), generator=rng, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{i:05d}_00000.ppm")
    test_images = base / "Final_Test" / "Images"
    test_images.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(5):
        Image.fromarray(torch.full((40, 30, 3), 50 * i, dtype=torch.uint8).numpy()).save(
            test_images / f"{i:05d}.ppm"
        )
        rows.append(f"{i:05d}.ppm;30;40;0;0;29;39;{i % 3}")
    (tmp_path / "root" / "gtsrb" / "GT-final_test.csv").write_text("\n".join(rows) + "\n")

    data = load_data("gtsrb", torch.device("cpu"), data_dir=tmp_path / "root", val_size=2)
    assert data.spec.channels == 3 and data.spec.num_classes == 43
    assert data.train.x.shape == (10, 3, 32, 32) and data.test.x.shape == (5, 3, 32, 32)
    assert data.test.y.tolist() == [0, 1, 2, 0, 1]
    assert data.train.x.min() >= -1 and data.train.x.max() <= 1
    # uniform grey test images stay uniform after the resize; 50 * i / 255 on the [0, 1] scale
    assert torch.allclose(data.test.x[2], torch.full((3, 32, 32), 100 / 127.5 - 1), atol=1e-6)


def test_damaged_dataset_files_are_called_damaged_not_missing(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(b"\x00\x01 not an idx file")
    with pytest.raises(DatasetUnavailable) as info:
        prepare_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "could not be read" in message and "damaged" in message and "not under" not in message
