"""Files from elsewhere never run code: exports, checkpoints and reference classifiers are loaded
as weights only, and a file whose unpickling would run code is refused in one line (exit 2)."""

import io
import json
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.export import _write, load_classifier
from tests.test_orchestrator_layout import _experiment_with_checkpoint
from trainables.models import ClassicClassifier
from trainables.runtime import rng_state
from trainables.safe_load import UnsafeFile, load_weights, read_exported_weights


class RunsCode:
    """Unpickling it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(tmp_path: Path, kind: str) -> Path:
    """A file of ``kind`` whose loading would create ``tmp_path/marker``."""
    marker, path = tmp_path / "marker", tmp_path / f"crafted-{kind}"
    payload = {"format": "robust-orchestrator/classifier/v1", "state_dict": RunsCode(marker)}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(payload))
    elif kind == "torch.save":
        torch.save(payload, path)
    elif kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    elif kind == "exported-pickled-weight":
        exported = _exported(tmp_path)
        with zipfile.ZipFile(exported) as src, zipfile.ZipFile(path, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith("model_weights_config.json"):
                    config = json.loads(data)
                    first = next(iter(config["config"].values()))
                    first["use_pickle"] = True
                    data = json.dumps(config).encode()
                dst.writestr(item, data)
    return path


def _exported(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = ClassicClassifier(1, 10)
    state = {
        "trainable": "classic",
        "iteration": 1,
        "config": {"dataset": "synthetic"},
        "program": {"classifier": model.state_dict()},
    }
    out = tmp_path / "model.pt2"
    _write(state, {"experiment": None, "trial_id": "t", "metrics": {}}, out, "exported")
    return out


def test_an_exported_program_is_rebuilt_from_its_raw_weights_as_torch_would_load_it(tmp_path):
    out = _exported(tmp_path)
    model, meta = load_classifier(out)
    trusted = torch.export.load(out).module()  # our own file: torch's full loader is fine here
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert meta["trial_id"] == "t" and meta["dataset"] == "synthetic"
    torch.testing.assert_close(model(x), trusted(x))
    weights, extra = read_exported_weights(out)
    assert weights["features.0.weight"].dtype == torch.float32 and "metadata.json" in extra
    assert any(v.dtype == torch.int64 for v in weights.values()), "num_batches_tracked"


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "torchscript", "exported-pickled-weight"])
def test_evaluate_refuses_a_file_that_would_run_code_in_one_line(tmp_path, kind):
    path = _crafted(tmp_path, kind)
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--attack", "pgd", "-n", "2"])
    assert result.exit_code == 2, result.output
    assert "refused" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output and "Warning" not in result.output
    assert not (tmp_path / "marker").exists(), "the file's code ran"


def test_a_reference_classifier_that_would_run_code_stops_the_search_before_it_starts(tmp_path):
    path = _crafted(tmp_path, "torch.save")
    args = ["search", "--space", "wgan_gp", "-n", "1", "--storage", str(tmp_path / "store"), "--name", "ref"]
    args += ["-s", "dataset=synthetic", "-s", f"ref_classifier={path}", "--wandb-mode", "disabled"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert "refused: loading it would call posix.system" in last and str(path) in last
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "store" / "ref").exists(), "nothing written"


def test_checkpoints_with_numpy_random_state_load_as_weights_only():
    buffer = io.BytesIO()
    torch.save({"rng": rng_state(), "program": {"w": torch.ones(2)}, "iteration": 3}, buffer)
    state = load_weights(buffer.getvalue())
    np.random.set_state(state["rng"]["numpy"])  # what a resumed trial does
    assert state["iteration"] == 3


def test_load_weights_names_the_call_it_refused(tmp_path):
    path = _crafted(tmp_path, "torch.save")
    with pytest.raises(UnsafeFile, match=r"would call posix\.system"):
        load_weights(path)
    assert not (tmp_path / "marker").exists()


def test_export_of_a_trial_whose_checkpoint_is_gone_is_one_line(tmp_path):
    experiment = _experiment_with_checkpoint(tmp_path)
    shutil.rmtree(experiment / "trial_a" / "checkpoint_000000")
    result = CliRunner().invoke(
        cli, ["export", "exp", "--storage", str(tmp_path), "--out", str(tmp_path / "m.pt")]
    )
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "trial trial_a: its checkpoint checkpoint_000000 is gone" in result.output
    assert "its folder has no checkpoint left" in result.output
