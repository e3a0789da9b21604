import json

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli

pytestmark = pytest.mark.train


FAST = [
    "-s",
    "dataset=synthetic",
    "-s",
    "robust_n=20",
    "-s",
    "test_robust_n=20",
    "-s",
    "pgd_steps=1",
    "-s",
    "test_apgd_steps=2",
    "-s",
    "test_square_queries=10",
    "--train-subset",
    "128",
]


def test_train_prints_a_line_per_epoch_and_final_json(tmp_path):
    result = CliRunner().invoke(cli, ["train", "-t", "classic", "--epochs", "2", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert sum(line.startswith("classic epoch") for line in lines) == 2
    final = json.loads(lines[-1])
    assert final["iteration"] == 2 and 0 <= final["test/acc"] <= 1


def test_train_resumes_from_checkpoint_dir(tmp_path):
    runner = CliRunner()
    args = [
        "train",
        "-t",
        "adaptive_ratio",
        *FAST,
        "-s",
        "cycle_steps=2",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    first = runner.invoke(cli, [*args, "--cycles", "1"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, [*args, "--cycles", "2"])
    assert second.exit_code == 0, second.output
    assert "resuming after cycle 1" in second.output
    assert "cycle 2/2" in second.output and "cycle 1/2" not in second.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "-t", "nope"], "'nope' is not one of"),
        (["train", "-t", "classic", "-s", "lrr=0.1"], "did you mean 'lr'"),
        (["train", "-t", "classic", "-s", "lr=-3"], "below its minimum"),
        (["train", "-t", "classic", "-s", "lr"], "KEY=VALUE"),
        (["train", "-t", "classic", "--epochs", "0"], "--epochs"),
        (["train", "-t", "wgan_gp", "-s", "n_critic=0"], "n_critic"),
        (["train", "-t", "classic", "--train-subset", "32"], "fewer images than one batch"),
        (["train", "-t", "classic", "--device", "cuda", "-s", "dataset=synthetic"], "torch sees no CUDA GPU"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, needle):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_missing_dataset_is_exit_code_2(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(
        torchvision.datasets.MNIST,
        "download",
        lambda self: (_ for _ in ()).throw(RuntimeError("offline")),
    )
    result = CliRunner().invoke(cli, ["train", "-t", "classic", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "MNIST is not under" in result.output and len(result.output.strip().splitlines()) == 1


def test_params_lists_every_field():
    result = CliRunner().invoke(cli, ["params", "wgan_gp"])
    assert result.exit_code == 0
    for name in ("n_critic", "gp_lambda", "cls_rate", "stages"):
        assert name in result.output


@pytest.mark.parametrize(
    ("capacity", "fmt", "architecture"),
    [
        ([], "state_dict", "ClassicClassifier"),
        (["-s", "classifier=smallcnn", "-s", "width=8"], "exported", "SmallCNN"),
    ],
)
def test_train_checkpoint_exports_and_evaluates_under_strong_attacks(tmp_path, capacity, fmt, architecture):
    runner = CliRunner()
    ckpt, model = tmp_path / "ckpt", tmp_path / "model.pt"
    trained = runner.invoke(
        cli, ["train", "-t", "classic", "--epochs", "1", *FAST, *capacity, "--checkpoint-dir", str(ckpt)]
    )
    assert trained.exit_code == 0, trained.output
    exported = runner.invoke(cli, ["export", str(ckpt), "--out", str(model), "--format", fmt])
    assert exported.exit_code == 0, exported.output
    assert "classic (synthetic)" in exported.output
    from orchestrator.export import load_classifier

    assert load_classifier(model)[1]["architecture"] == architecture
    result = runner.invoke(
        cli, ["evaluate", str(model), "--attack", "pgd", "--attack", "apgd-ce", "-n", "16", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1, "--json: one line per classifier on stdout"
    assert "clean" in result.stderr, "the progress lines go to stderr"
    row = json.loads(result.stdout)
    assert row["n"] == 16 and row["dataset"] == "synthetic" and row["eps_scale"] == "[0, 1] pixels"
    assert 0 <= row["worst"] <= min(row["pgd_acc"], row["apgd-ce_acc"]) <= 1
    assert row["apgd-ce_s"] > 0


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--attack", "fgsm"], "unknown attack 'fgsm'"),
        (["--eps", "8"], "[0, 1] pixel scale"),
        (["-n", "0"], "--images must be at least 1"),
    ],
)
def test_evaluate_rejects_bad_input_in_one_line(tmp_path, args, needle):
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["evaluate", str(model), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    "content,args,needle",
    [
        (b"not a model", [], "is not a classifier exported by robust-orchestrator"),
        (b"", [], "is not a classifier exported by robust-orchestrator"),
        (bytes(range(256)) * 40, [], "is not a classifier exported by robust-orchestrator"),
        (b"PK\x03\x04" + bytes(2000), [], "is not a classifier exported by robust-orchestrator"),
        (None, ["--device", "bogus"], "--device 'bogus': choose auto, cpu or cuda"),
        (None, ["--device", "cuda"], "torch sees no CUDA GPU"),
    ],
    ids=["text", "empty", "random", "broken-zip", "device-bogus", "device-cuda"],
)
def test_evaluate_on_a_file_that_is_no_model_or_a_bad_device_is_one_line(tmp_path, content, args, needle):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    model = tmp_path / "model.pt"
    if content is None:
        torch.save({"format": "robust-orchestrator/classifier/v1"}, model)
    else:
        model.write_bytes(content)
    result = CliRunner().invoke(cli, ["evaluate", str(model), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output
