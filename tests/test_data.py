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
