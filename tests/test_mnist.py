"""The real MNIST files: the Classic Classifier reaches seed 000's accuracy in one CPU epoch."""

import pytest

from trainables import get_spec
from trainables.reporting import MemoryReporter
from trainables.trial import run_trial


@pytest.mark.slow
def test_classic_one_epoch_on_real_mnist(mnist_root):
    reporter = MemoryReporter()
    config = {
        "data_dir": str(mnist_root),
        "epochs": 1,
        "device": "cpu",
        "robust_n": 200,
        "test_robust_n": 200,
        "pgd_steps": 10,
        "pgd_step_size": 0.04,
        # not checked here (tests/test_attacks.py, tests/test_evaluation.py): ~5 s less
        "apgd_steps": 0,
        "test_apgd_steps": 0,
        "test_square_queries": 0,
        "noise_eval": False,
    }
    last = run_trial(get_spec("classic"), config, reporter)
    assert last["test/acc"] >= 0.98, last["test/acc"]
    assert last["val/acc"] >= 0.98
    # A standard classifier is not robust: PGD at eps 0.3 breaks it (a sanity check of the attack).
    assert last["test/pgd_acc"] < 0.2
