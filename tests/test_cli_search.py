"""`orchestrator search / results / resume / spaces` through click's runner (no trial runs)."""

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli

BASE = ["search", "--space", "classic", "--wandb-mode", "disabled", "-s", "dataset=synthetic"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["search", "--space", "nope"], "'nope' is not one of"),
        ([*BASE, "--searcher", "grid"], "'grid' is not one of"),
        ([*BASE, "--scheduler", "pbt"], "'pbt' is not one of"),
        ([*BASE, "--objective", "pareto", "--searcher", "cmaes"], "single-objective"),
        ([*BASE, "--range", "lr=0.1:0.01"], "LOW must be below HIGH"),
        ([*BASE, "--range", "lr=0.1"], "NAME=LOW:HIGH"),
        ([*BASE, "--range", "momentum=0.1:0.2"], "not a parameter of space classic"),
        ([*BASE, "-s", "lrr=0.1"], "did you mean 'lr'"),
        ([*BASE, "-s", "lr=5"], "above its maximum"),
        ([*BASE, "--address", "127.0.0.1:9"], "cannot reach a Ray cluster"),
        ([*BASE, "--gpus-per-trial", "-1"], "--gpus-per-trial"),
        ([*BASE, "--time-budget", "soon"], "--time-budget"),
        ([*BASE, "--name", "x" * 300], "300 characters long; at most 100"),
        ([*BASE, "--address", "ray://127.0.0.1:18999"], "cannot reach a Ray cluster at 127.0.0.1:18999"),
        (["results", "nope"], "no experiment 'nope'"),
        (["resume", "nope"], "no experiment 'nope'"),
    ],
)
def test_bad_search_input_is_one_line_exit_2(tmp_path, args, needle):
    result = CliRunner().invoke(cli, [*args, "--storage", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "nothing written, no name taken"


def test_unwritable_storage(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, [*BASE, "--storage", str(blocker / "sub")])
    assert result.exit_code == 2 and "not writable" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_dataset(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(
        torchvision.datasets.MNIST,
        "download",
        lambda self: (_ for _ in ()).throw(RuntimeError("offline")),
    )
    result = CliRunner().invoke(
        cli,
        [
            "search",
            "--space",
            "classic",
            "--data-dir",
            str(tmp_path / "none"),
            "--storage",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "MNIST is not under" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_spaces_lists_parameters_and_objectives():
    result = CliRunner().invoke(cli, ["spaces"])
    assert result.exit_code == 0
    for needle in (
        "classic",
        "wgan_gp",
        "adaptive_ratio",
        "val/apgd_acc",
        "n_critic",
        "target_gen_loss",
        "when schedule=adaptive",
    ):
        assert needle in result.output


def test_every_command_help_has_an_example():
    import click

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            yield (*prefix, name), command
            if isinstance(command, click.Group):
                yield from commands(command, (*prefix, name))

    for path, _ in commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.output, f"orchestrator {' '.join(path)} --help has no example"
