"""What every reported metric means, declared once (no torch, no Ray).

A report key such as ``val/fgsm_acc/eps0.3`` is matched against the patterns below, in order;
the first match gives its :class:`Metric` (kind, direction, worst value, label, unit) and the
fields the pattern names (``split``, ``eps``, ...). The trial loop reads the worst value a
diverged trial reports, the results tables which direction is "best", the leaderboard and the
report the labels, and the reproduction script the noise levels. A trainable defined outside
this package declares its own keys with :func:`register`.

Pixel scale: every eps and noise amount in a key or a label is on the [0, 1] pixel scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Report key (a sentence) of a trial's first report after a damaged checkpoint was skipped on
#: a restore (``trainables.reporting.load_first_readable``); it lands in the trial's row.
RESTORE_NOTE = "restore_note"

#: Noise of seed 004 (which names three levels per type without numbers): level name ->
#: amount on the [0, 1] pixel scale; :data:`NOISE_AMOUNT` says what the amount is.
#: The attacks of ``orchestrator evaluate`` (final numbers, test split), the one table of them:
#: name -> report key (``test/<key>``). The robustness suite runs them, the CLI validates them,
#: the registry below describes their keys and the leaderboard shows them.
FINAL_ATTACKS: dict[str, str] = {
    "pgd": "pgd40_acc",
    "pgd-restarts": "pgd100x5_acc",
    "apgd-ce": "apgd_ce_acc",
    "apgd-t": "apgd_t_acc",
    "square": "square_acc",
    "autoattack": "aa_acc",
}
#: The parts of ``autoattack`` (standard AutoAttack), in the order they run.
AUTOATTACK = ("apgd-ce", "apgd-t", "square")
#: Per image, the worst case over the attacks run.
WORST_KEY = "strong_worst_acc"

NOISE_LEVELS: dict[str, dict[str, float]] = {
    "gaussian": {"low": 0.1, "medium": 0.2, "high": 0.3},
    "salt_pepper": {"low": 0.05, "medium": 0.1, "high": 0.2},
    "periodic": {"low": 0.1, "medium": 0.2, "high": 0.3},
}
NOISE_AMOUNT: dict[str, str] = {
    "gaussian": "sigma",
    "salt_pepper": "fraction of pixels",
    "periodic": "amplitude",
}

SPLITS = {"val": "validation", "test": "test", "train": "training", "pretrain": "pre-training"}


@dataclass(frozen=True)
class Metric:
    """The meaning of a family of report keys.

    ``direction``: ``max`` (higher is better), ``min`` (lower is better) or ``""`` (neither:
    a setting, a count, a flag). ``worst``: what a diverged trial reports (0 for accuracies,
    NaN for everything else). ``label``: a human label whose ``{fields}`` come from the key's
    pattern and, for attack settings, from the trial's config. ``unit``: what one unit is.
    """

    kind: str
    direction: str
    label: str
    unit: str
    worst: float = math.nan

    @property
    def is_accuracy(self) -> bool:
        return self.kind == "accuracy"


@dataclass(frozen=True)
class MetricInfo:
    key: str
    metric: Metric
    fields: Mapping[str, str]

    @property
    def direction(self) -> str:
        return self.metric.direction

    @property
    def worst(self) -> float:
        return self.metric.worst

    @property
    def is_accuracy(self) -> bool:
        return self.metric.is_accuracy

    def label(self, config: Mapping[str, Any] | None = None) -> str:
        """The metric's label, attack settings filled from ``config`` where given."""
        values = _config_defaults()
        for name in _CONFIG_NAMES:
            if config and config.get(name) is not None:
                values[name] = config[name]
        for prefix in ("", "test_"):  # APGD-CE, then APGD-DLR or APGD-T against k classes
            targets = int(values[f"{prefix}apgd_targets"])
            values[f"{prefix}apgd_parts"] = f"CE+T{targets}" if targets else "CE+DLR"
        split = self.fields.get("split", "")
        values.update(self.fields)
        values["split_name"] = SPLITS.get(split, split)
        values["level_amount"] = ""
        kind, level = self.fields.get("noise"), self.fields.get("level")
        if kind in NOISE_LEVELS and level in NOISE_LEVELS[kind]:
            values["level_amount"] = f"{NOISE_AMOUNT[kind]} {NOISE_LEVELS[kind][level]:g}"
        return self.metric.label.format(**values)


#: Attack settings a label may name; their defaults are the trial config's (one owner).
_CONFIG_NAMES = (
    "pgd_steps",
    "pgd_eps",
    "apgd_steps",
    "apgd_targets",
    "test_apgd_steps",
    "test_apgd_targets",
    "test_square_queries",
)


def _config_defaults() -> dict[str, Any]:
    from trainables.configs import TrialConfig

    return {name: getattr(TrialConfig, name) for name in _CONFIG_NAMES}


ACCURACY = "accuracy"
_ACC = {"kind": ACCURACY, "direction": "max", "unit": "fraction", "worst": 0.0}

_REGISTRY: list[tuple[re.Pattern[str], Metric]] = []


def _compile(pattern: str) -> re.Pattern[str]:
    """``{name}`` matches one path segment, ``{name:a|b}`` one of the listed words."""
    parts = re.split(r"(\{\w+(?::[\w|]+)?\})", pattern)
    regex = ""
    for part in parts:
        field = re.fullmatch(r"\{(\w+)(?::([\w|]+))?\}", part)
        if field:
            regex += f"(?P<{field.group(1)}>{field.group(2) or '[^/]+'})"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$")


def register(pattern: str, metric: Metric, *, first: bool = False) -> None:
    """Declare the meaning of every key matching ``pattern`` (``{field}`` matches one path
    segment). Later registrations are tried after earlier ones unless ``first``."""
    entry = (_compile(pattern), metric)
    if first:
        _REGISTRY.insert(0, entry)
    else:
        _REGISTRY.append(entry)


_UNKNOWN = Metric("other", "", "{key}", "")


def describe(key: str) -> MetricInfo:
    """The meaning of report key ``key`` (an unregistered key is ``other``, no direction)."""
    for regex, metric in _REGISTRY:
        match = regex.match(key)
        if match:
            return MetricInfo(key, metric, match.groupdict())
    return MetricInfo(key, _UNKNOWN, {"key": key})


def label(key: str, config: Mapping[str, Any] | None = None) -> str:
    return describe(key).label(config)


def worst(key: str) -> float:
    """What a diverged trial reports under ``key``."""
    return describe(key).worst


def best(key: str, values) -> float | None:
    """The best of ``values`` for ``key`` by its direction (None without a direction)."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    direction = describe(key).direction
    if not values or not direction:
        return None
    return max(values) if direction == "max" else min(values)


# ---- the evaluation suite every trainable reports (trainables/evaluation.py) ----
EVAL = "{split:val|test}"
register(f"{EVAL}/acc", Metric(label="clean {split_name} accuracy", **_ACC))
register(f"{EVAL}/loss", Metric("loss", "min", "clean {split_name} cross-entropy", "nats"))
register(EVAL + "/fgsm_acc/eps{eps}", Metric(label="FGSM {split_name} accuracy (eps {eps})", **_ACC))
register(f"{EVAL}/pgd_acc", Metric(label="PGD-{pgd_steps} {split_name} accuracy (eps {pgd_eps})", **_ACC))
register(
    "{split:val}/apgd_acc",
    Metric(label="APGD-{apgd_parts}-{apgd_steps} {split_name} accuracy (eps {pgd_eps})", **_ACC),
)
register(
    "{split:test}/apgd_acc",
    Metric(label="APGD-{test_apgd_parts}-{test_apgd_steps} {split_name} accuracy (eps {pgd_eps})", **_ACC),
)
register(
    "{split:test}/apgd_square_acc",
    Metric(
        label="APGD-{test_apgd_parts}-{test_apgd_steps} + Square-{test_square_queries} {split_name} accuracy "
        "(eps {pgd_eps}, worst per image)",
        **_ACC,
    ),
)
register(
    "val/robust_iteration",
    Metric("count", "", "iteration the robust validation metrics were measured at", "iterations"),
)
register(
    EVAL + "/noise_acc/{noise}/{level}",
    Metric(label="{split_name} accuracy under {noise} noise, {level} ({level_amount})", **_ACC),
)
# ---- final numbers of `orchestrator evaluate` (orchestrator/evaluate.py), test split only ----
register(
    "test/{attack:"
    + "|".join(k.removesuffix("_acc") for k in (*FINAL_ATTACKS.values(), WORST_KEY))
    + "}_acc",
    Metric(label="test accuracy under {attack} (orchestrator evaluate)", **_ACC),
)
register("test/eval_n", Metric("count", "", "test images attacked by orchestrator evaluate", "images"))
# ---- training progress shared by the trainables ----
register("{split:train|pretrain}/acc", Metric(label="{split_name} accuracy", **_ACC))
register("{split:train|pretrain}/loss", Metric("loss", "min", "{split_name} loss", "nats"))
register("train/{name}_acc", Metric(label="training accuracy ({name})", **_ACC))
register("train/{name}_loss", Metric("loss", "min", "training loss ({name})", "nats"))
#: A trial's own clock: seconds of training and validation up to the model a report describes,
#: carried in its checkpoints (a restored trial goes on from where it was); ASHA's rungs in
#: seconds (``orchestrator search --rung-unit seconds``) count it.
TRIAL_SECONDS = "time/trial_s"
register(TRIAL_SECONDS, Metric("time", "", "trial seconds (training + validation) up to this model", "s"))
register("time/{name}_s", Metric("time", "min", "{name} time per iteration", "s"))
register("time/train_images_per_s", Metric("rate", "max", "training images per second", "images/s"))
register("iteration", Metric("count", "", "iteration", "iterations"))
register("diverged", Metric("flag", "", "diverged (non-finite loss)", "0/1"))
register("deadline_end", Metric("flag", "", "ended by the search's deadline (--time-budget)", "0/1"))
# ---- wgan_gp ----
register("train/wasserstein", Metric("distance", "", "Wasserstein estimate of the critic", "critic units"))
register("train/gp", Metric("penalty", "", "gradient penalty", "critic units"))
register(
    "gen/fid", Metric("distance", "min", "Frechet distance of samples to validation images", "feature units")
)
register("gen/steps", Metric("count", "", "generator steps", "steps"))
register("gen/{who}_acc", Metric(label="{who} classifier's accuracy on generated samples", **_ACC))
register("stage/{step}/{who}_acc", Metric(label="{who} accuracy on stage-{step} samples", **_ACC))
# ---- adaptive_ratio ----
register("ratio/k", Metric("count", "", "generator:classifier training ratio k", "generator steps"))
register("ratio/next_k", Metric("count", "", "k of the next cycle", "generator steps"))
register(
    "train/gen_loss",
    Metric("probability", "", "classifier's mean true-class probability on generated images", "probability"),
    first=True,
)
register(
    "train/gen_loss_end",
    Metric("probability", "", "generator loss over the cycle's last steps", "probability"),
    first=True,
)
register("train/gen_ce", Metric("loss", "", "cross-entropy the attacker maximises (mean over steps)", "nats"))
register(
    "train/gen_diversity", Metric("ratio", "", "diversity of perturbations across latent codes", "ratio")
)
register(
    "attack/gen_acc",
    Metric(label="classifier's accuracy on the generator's images (one training batch)", **_ACC),
)
register(
    "attack/pgd10_acc",
    Metric(label="classifier's accuracy on PGD-10 images of the same batch", **_ACC),
)
