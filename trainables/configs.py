"""The trainables' configurations, without torch: every parameter a trial takes, its default,
range and meaning (``orchestrator params`` prints them in well under a second; the plan
validates a search's settings with them). Each trainable's module builds its program from its
config class here; ``trainables.catalog`` names the class of each (``TrainableInfo.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trainables.config import Config, param
from trainables.datasets import DATASETS
from trainables.schedules import LR_SCHEDULES, SCHEDULES, validate_steps


@dataclass(frozen=True)
class EvalSpec:
    """What a trial's validation or test evaluates (``trainables.evaluation.evaluate``)."""

    fgsm_eps: tuple[float, ...] = (0.1, 0.2, 0.3)
    pgd_eps: float = 0.3
    pgd_steps: int = 40
    pgd_step_size: float = 0.01
    pgd_restarts: int = 1
    #: APGD steps per attack of ``apgd_acc`` (0: no ``apgd_acc``).
    apgd_steps: int = 0
    #: After APGD-CE: 0 = APGD-DLR (untargeted), k = APGD-T against the k most likely wrong classes.
    apgd_targets: int = 0
    #: Square queries per image of ``apgd_square_acc`` (0: no ``apgd_square_acc``).
    square_queries: int = 0
    noise: bool = True
    #: Examples for clean accuracy (0 = the whole split).
    clean_n: int = 0
    #: Examples attacked and corrupted (a fixed random subset; 0 = the whole split).
    robust_n: int = 1000
    #: 250: on a 2-core CPU an attack step costs ~1.5x more per image at 500 (cache misses).
    batch_size: int = 250
    seed: int = 0


#: The classifier architectures (``trainables.models.CLASSIFIERS``).
CLASSIFIERS = ("classic", "smallcnn")

#: The generator families of ``adaptive_ratio`` (see :mod:`trainables.adaptive_ratio`).
GENERATORS = ("image", "gradient")


@dataclass(frozen=True)
class TrialConfig(Config):
    """Settings every trainable shares: data, evaluation protocol, runtime, checkpoints."""

    budget_key: ClassVar[str] = "iterations"

    dataset: str = param("mnist", choices=tuple(DATASETS), doc="torchvision dataset")
    data_dir: str = param("", doc="dataset root ('' = $ORCHESTRATOR_DATA_DIR or the cache)")
    val_size: int = param(0, lo=0, doc="validation images split off the training file (0 = dataset default)")
    train_subset: int = param(0, lo=0, doc="train on the first n training images (0 = all)")
    eval_subset: int = param(
        1000, lo=0, doc="clean validation accuracy on a fixed subset of n images (0 = all; test: all)"
    )
    robust_n: int = param(200, lo=0, doc="validation images attacked/corrupted per evaluation (0 = all)")
    robust_every: int = param(
        1, lo=1, doc="robust validation metrics every n-th iteration (and at robust_rungs and the last)"
    )
    robust_rungs: tuple[int, ...] = param(
        (), lo=1, doc="iterations that always get robust validation metrics (search: ASHA's rungs)"
    )
    robust_rungs_s: tuple[float, ...] = param(
        (),
        lo=0.0,
        doc="trial seconds (time/trial_s) whose crossing gets robust validation metrics "
        "(search: ASHA's rungs with --rung-unit seconds)",
    )
    test_robust_n: int = param(0, lo=0, doc="test images attacked/corrupted at the end (0 = all)")
    fgsm_eps: tuple[float, ...] = param(
        (0.1, 0.2, 0.3), lo=0.0, hi=1.0, doc="FGSM eps grid, [0,1] pixel scale"
    )
    pgd_eps: float = param(0.3, lo=0.0, hi=1.0, doc="PGD eps, [0,1] pixel scale")
    pgd_steps: int = param(40, lo=0, hi=1000, doc="PGD steps (0 disables PGD)")
    pgd_step_size: float = param(0.01, lo=1e-5, hi=1.0, doc="PGD step, [0,1] pixel scale")
    pgd_restarts: int = param(1, lo=1, hi=100, doc="PGD random restarts")
    apgd_steps: int = param(
        10, lo=0, hi=1000, doc="APGD steps per attack of val/apgd_acc at pgd_eps (0 = off)"
    )
    apgd_targets: int = param(
        0, lo=0, hi=99, doc="val/apgd_acc after APGD-CE: APGD-T against n wrong classes (0 = APGD-DLR)"
    )
    test_apgd_steps: int = param(
        25, lo=0, hi=1000, doc="APGD steps per attack of test/apgd_acc at the end (0 = off)"
    )
    test_apgd_targets: int = param(
        9, lo=0, hi=99, doc="test/apgd_acc after APGD-CE: APGD-T against n wrong classes (0 = APGD-DLR)"
    )
    test_square_queries: int = param(
        1000, lo=0, hi=100000, doc="test/apgd_square_acc: Square queries on images test APGD leaves (0 = off)"
    )
    val_pgd: bool = param(False, doc="also PGD on validation (the test split always gets it)")
    noise_eval: bool = param(True, doc="evaluate Gaussian / salt-and-pepper / periodic noise")
    batch_size: int = param(128, lo=2, hi=8192, doc="training batch size")
    classifier: str = param(
        "classic",
        choices=CLASSIFIERS,
        doc="the classifier's architecture: seed 000's Classic Classifier or TRADES' SmallCNN",
    )
    width: int = param(
        32, lo=4, hi=256, doc="the classifier's conv channels (classic: both convs; smallcnn: 1x, 1x, 2x, 2x)"
    )
    lr_schedule: str = param(
        "constant",
        choices=LR_SCHEDULES,
        doc="classifier learning rate over the budget (iterations, or time to the deadline): "
        "constant, or a linear or cosine decay to lr_floor at its end",
    )
    lr_floor: float = param(
        0.0, lo=0.0, hi=1.0, doc="the decayed learning rate at the end, a fraction of the first"
    )
    weight_average: float = param(
        0.0,
        lo=0.0,
        hi=0.99,
        doc="decay of a moving average of the classifier's weights, updated after each iteration "
        "(0 = off); the average is what validation, the test, export and evaluate see",
    )
    eps_ramp: float = param(
        0.0, lo=0.0, hi=0.9, doc="training attack's eps grows linearly from 0 over this share of the budget"
    )
    seed: int = param(0, lo=0, doc="seed of models, data order and noise")
    device: str = param("auto", choices=("auto", "cpu", "cuda"), doc="auto = CUDA when available")
    precision: str = param("auto", choices=("auto", "fp32", "bf16"), doc="auto = bf16 autocast on CUDA")
    channels_last: bool = param(True, doc="channels_last memory format (faster convs on CPU and GPU)")
    checkpoint_every: int = param(1, lo=1, doc="checkpoint every n iterations (and at the end)")
    media_every: int = param(0, lo=0, doc="attach image grids every n iterations (0 = never)")
    deadline_file: str = param(
        "", doc="the search's deadline.json: end (tested, checkpointed) before it ('' = no deadline)"
    )

    @property
    def budget(self) -> int:
        return int(getattr(self, self.budget_key))

    def robust_iteration(
        self, iteration: int, first: bool = False, seconds: tuple[float, float] = (0.0, 0.0)
    ) -> bool:
        """Whether validation at ``iteration`` runs the attacks and corruptions (``first``:
        the first iteration of this process, which has no earlier values to carry; ``seconds``:
        the trial's clock at its last report and now, which may cross a rung in seconds)."""
        return (
            first
            or iteration % self.robust_every == 0
            or iteration in self.robust_rungs
            or any(seconds[0] < rung <= seconds[1] for rung in self.robust_rungs_s)
            or iteration == self.budget
        )

    def eval_spec(self, final: bool = False) -> EvalSpec:
        """Validation (``final=False``) or test-split evaluation protocol."""
        return EvalSpec(
            fgsm_eps=self.fgsm_eps,
            pgd_eps=self.pgd_eps,
            pgd_steps=self.pgd_steps if final or self.val_pgd else 0,
            pgd_step_size=self.pgd_step_size,
            pgd_restarts=self.pgd_restarts,
            apgd_steps=self.test_apgd_steps if final else self.apgd_steps,
            apgd_targets=self.test_apgd_targets if final else self.apgd_targets,
            square_queries=self.test_square_queries if final else 0,
            noise=self.noise_eval,
            clean_n=0 if final else self.eval_subset,
            robust_n=self.test_robust_n if final else self.robust_n,
            seed=0,  # the same perturbations for every trial of a search, whatever its seed
        )

    def validate(self) -> None:
        super().validate()
        if 0 < self.train_subset < self.batch_size:
            raise ValueError(
                f"train_subset={self.train_subset} holds fewer images than one batch "
                f"(batch_size={self.batch_size})"
            )


@dataclass(frozen=True)
class ClassicConfig(TrialConfig):
    trainable: ClassVar[str] = "classic"
    budget_key: ClassVar[str] = "epochs"

    epochs: int = param(10, lo=1, hi=10_000, doc="training epochs (one report each)")
    lr: float = param(1e-3, lo=1e-6, hi=1.0, doc="Adam learning rate")
    weight_decay: float = param(0.0, lo=0.0, hi=0.1, doc="Adam weight decay")
    adv_train: str = param("none", choices=("none", "fgsm", "pgd"), doc="adversarial training attack")
    adv_eps: float = param(0.3, lo=0.0, hi=1.0, doc="adversarial training eps, [0,1] pixel scale")
    adv_steps: int = param(10, lo=1, hi=200, doc="PGD steps of adversarial training")
    adv_step_size: float = param(
        0.0, lo=0.0, hi=1.0, doc="PGD training step, [0,1] scale (0 = 2.5*eps/steps)"
    )
    adv_weight: float = param(0.5, lo=0.0, hi=1.0, doc="weight of the adversarial loss (1 - it on clean)")


@dataclass(frozen=True)
class WganGpConfig(TrialConfig):
    trainable: ClassVar[str] = "wgan_gp"
    budget_key: ClassVar[str] = "iterations"

    iterations: int = param(20, lo=1, hi=100_000, doc="reports; each is gen_steps generator steps")
    gen_steps: int = param(100, lo=1, hi=1_000_000, doc="generator steps per iteration")
    n_critic: int = param(5, lo=1, hi=100, doc="critic steps per generator step")
    gp_lambda: float = param(10.0, lo=0.0, hi=1000.0, doc="gradient penalty weight")
    gen_lr: float = param(1e-4, lo=1e-7, hi=1.0, doc="generator Adam learning rate")
    critic_lr: float = param(1e-4, lo=1e-7, hi=1.0, doc="critic Adam learning rate")
    cls_lr: float = param(1e-3, lo=1e-7, hi=1.0, doc="classifier Adam learning rate")
    beta1: float = param(0.5, lo=0.0, hi=0.999, doc="Adam beta1 of generator and critic")
    beta2: float = param(0.9, lo=0.0, hi=0.9999, doc="Adam beta2 of generator and critic")
    cls_rate: float = param(0.5, lo=0.0, hi=100.0, doc="classifier steps per generator step")
    latent_dim: int = param(128, lo=1, hi=4096, doc="generator latent size")
    conditional_critic: bool = param(True, doc="class projection in the critic")
    stages: tuple[int, ...] = param((1000, 2000, 3000, 4000), lo=1, doc="generator steps of the snapshots")
    sample_n: int = param(1000, lo=10, hi=100_000, doc="generated samples per evaluation")
    ref_epochs: int = param(2, lo=1, hi=100, doc="epochs of the reference Classic Classifier")
    ref_classifier: str = param(
        "", doc="reference state dict (path or URI; '' = train and cache)", weights=True
    )
    batch_size: int = param(64, lo=2, hi=8192, doc="batch size of critic, generator and classifier")


@dataclass(frozen=True)
class AdaptiveRatioConfig(TrialConfig):
    trainable: ClassVar[str] = "adaptive_ratio"
    budget_key: ClassVar[str] = "cycles"

    cycles: int = param(20, lo=1, hi=100_000, doc="generator/classifier cycles (one report each)")
    pretrain_epochs: int = param(1, lo=0, hi=100, doc="clean pre-training epochs of the classifier")
    cls_lr: float = param(1e-3, lo=1e-7, hi=1.0, doc="classifier Adam learning rate")
    gen_lr: float = param(1e-3, lo=1e-7, hi=1.0, doc="generator Adam learning rate")
    gen_eps: float = param(0.3, lo=0.001, hi=1.0, doc="perturbation bound, [0,1] pixel scale")
    generator: str = param("image", choices=GENERATORS, doc="image: seed 001's; gradient: learned attacker")
    gen_steps: int = param(5, lo=1, hi=10, doc="gradient: recursive attack steps")
    gen_step_size: float = param(0.5, lo=0.01, hi=1.0, doc="gradient: largest step, a fraction of gen_eps")
    diversity_weight: float = param(
        0.0, lo=0.0, hi=100.0, doc="gradient: weight of the latent-code diversity term"
    )
    adv_copies: int = param(1, lo=1, hi=4, doc="gradient: adversarial copies (latent codes) per image")
    gen_random_start: bool = param(True, doc="gradient: start each attack at a random point of the eps ball")
    schedule: str = param("fixed", choices=SCHEDULES, doc="ratio schedule")
    k: int = param(2, lo=1, hi=100_000, doc="fixed k, and the adaptive schedule's first k")
    k_steps: tuple[tuple[int, int], ...] = param(
        ((1, 6), (8, 8), (15, 12)), doc="stepped schedule as 'cycle:k,...' (seed: 6 -> 8 -> 12)"
    )
    target_gen_loss: float = param(0.6, lo=0.0, hi=1.0, doc="adaptive: keep the generator loss under this")
    k_min: int = param(1, lo=1, hi=100_000, doc="adaptive: smallest k")
    k_max: int = param(1000, lo=1, hi=100_000, doc="adaptive: largest k (seed saw k > 700)")
    k_factor: float = param(1.5, lo=1.01, hi=10.0, doc="adaptive: multiplicative change of k")
    cycle_steps: int = param(
        50, lo=1, hi=1_000_000, doc="classifier steps per cycle (generator: k times as many)"
    )
    clean_frac: float = param(
        0.5, lo=0.0, hi=1.0, doc="share of clean images in the classifier's batches (gradient: loss weight)"
    )

    def validate(self) -> None:
        super().validate()
        if self.generator == "gradient" and self.diversity_weight > 0 and self.adv_copies < 2:
            raise ValueError(
                f"diversity_weight={self.diversity_weight:g} needs adv_copies >= 2 "
                "(the diversity term compares the attacks of two latent codes on the same image)"
            )
        if self.schedule == "stepped":
            validate_steps(self.k_steps)
        if self.k_min > self.k_max:
            raise ValueError(f"k_min={self.k_min} is above k_max={self.k_max}")
        if self.schedule == "adaptive" and not self.k_min <= self.k <= self.k_max:
            raise ValueError(f"k={self.k} must lie within [k_min, k_max] = [{self.k_min}, {self.k_max}]")
