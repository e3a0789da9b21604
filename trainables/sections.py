"""The ``orchestrator report`` sections of the built-in trainables (declared in their catalog
entries). Each takes a ``SectionContext`` (the experiment, its best trial, matplotlib and a
figure saver) and returns Markdown lines. No torch, no Ray.
"""

from __future__ import annotations

from trainables import metrics


def _stage_steps(row: dict) -> list[int]:
    """The generator steps of the stage metrics in a report row."""
    steps = set()
    for key, value in row.items():
        info = metrics.describe(key)
        if key.startswith("stage/") and value is not None and info.fields.get("who") == "cls":
            steps.add(int(info.fields["step"]))
    return sorted(steps)


def stage_samples(ctx) -> list[str]:
    """wgan_gp: the generator's sample grids of every stage (seed 000's figure)."""
    grids = {}
    for row in ctx.reports():
        for key, value in row.items():
            if key.startswith("media/stage_") and isinstance(value, bytes):
                grids[int(key.rsplit("_", 1)[1])] = value
    if not grids:
        return []
    plt = ctx.plt()
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.8), squeeze=False)
    for ax, step in zip(axes[0], sorted(grids)):
        ax.imshow(ctx.image(grids[step]))
        ax.set_title(f"generator step {step}")
        ax.axis("off")
    fig.suptitle(
        ctx.title(
            f"{ctx.exp.name} / {ctx.trial['trial_id']}: generator samples per stage "
            "(rows: classes 0-9 cycling)",
            90,
        )
    )
    name = ctx.save(fig, "stage_samples")
    return [f"![{name}]({name})", ""]


def stage_table(ctx) -> list[str]:
    """wgan_gp: accuracy of this classifier and of the reference on each stage's samples, as a
    chart and as seed 000's table."""
    reports = ctx.reports()
    last = reports[-1] if reports else {}
    steps = _stage_steps(last)
    if not steps:
        return []
    cls = [last[f"stage/{s}/cls_acc"] for s in steps]
    ref = [last[f"stage/{s}/ref_acc"] for s in steps]
    plt = ctx.plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    width = 0.38
    xs = range(len(steps))
    ax.bar([x - width / 2 for x in xs], cls, width, label="Robust Classifier (this trial)")
    ax.bar([x + width / 2 for x in xs], ref, width, label="Classic Classifier (reference)")
    ax.set_xticks(list(xs), [str(s) for s in steps])
    ax.set_xlabel("generator stage (generator steps)")
    ax.set_ylabel("accuracy on stage samples (fraction)")
    ax.set_ylim(0, 1)
    ax.set_title(ctx.title(f"{ctx.exp.name}: accuracy on generator samples per stage"))
    ax.legend(fontsize=8)
    name = ctx.save(fig, "stage_accuracy")
    header = "| classifier | " + " | ".join(f"step {s}" for s in steps) + " |"
    sep = "|---|" + "---|" * len(steps)
    row_cls = "| Robust Classifier (this trial) | " + " | ".join(f"{v:.1%}" for v in cls) + " |"
    row_ref = "| Classic Classifier (reference) | " + " | ".join(f"{v:.1%}" for v in ref) + " |"
    return [
        f"![{name}]({name})",
        "",
        f"Seed 000's stage table, trial `{ctx.trial['trial_id']}`: accuracy on each stage's "
        "samples (fixed latents, conditioning labels as the truth):",
        "",
        header,
        sep,
        row_cls,
        row_ref,
        "",
    ]


def ratio_cycles(ctx) -> list[str]:
    """adaptive_ratio: k, the losses, the generator's strength as an attack and FGSM / PGD
    accuracy per cycle (seed 001's figures)."""
    rows = ctx.reports()
    if not rows:
        return []
    trial = ctx.trial
    plt = ctx.plt()
    from matplotlib.ticker import MaxNLocator

    xs = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.0))
    axes[0].plot(xs, [r.get("ratio/k") for r in rows], "-o", color="tab:purple")
    axes[0].set_yscale("log")
    axes[0].set_title(ctx.title("training ratio k (generator updates per classifier update)", 45))
    axes[0].set_ylabel("k (log scale)")
    axes[1].plot(
        xs, [r.get("train/gen_loss") for r in rows], "-o", label="generator loss (mean p(true class))"
    )
    axes[1].plot(xs, [r.get("train/cls_loss") for r in rows], "-o", label="classifier loss (cross-entropy)")
    target = trial.get("config/target_gen_loss")
    if trial.get("config/schedule") == "adaptive" and target is not None:
        axes[1].axhline(target, color="gray", ls="--", label=f"target generator loss {target:.2f}")
    axes[1].set_title("losses per cycle")
    axes[1].set_ylabel("loss")
    axes[1].legend(fontsize=7, loc="best")
    for key in sorted(k for k in rows[-1] if k.startswith("val/fgsm_acc/")):
        axes[2].plot(xs, [r.get(key) for r in rows], "-o", label=f"FGSM eps {key.rsplit('eps', 1)[1]}")
    for key, style in (("val/apgd_acc", "-s"), ("val/pgd_acc", "-^")):
        if any(r.get(key) is not None for r in rows):
            axes[2].plot(xs, [r.get(key) for r in rows], style, color="black", label=ctx.label(key))
    if any(r.get("attack/gen_acc") is not None for r in rows):
        axes[2].plot(
            xs,
            [r.get("attack/gen_acc") for r in rows],
            ":",
            color="tab:red",
            label="on the generator's images (train)",
        )
    axes[2].plot(xs, [r.get("val/acc") for r in rows], "--", color="gray", label="clean")
    axes[2].set_title("accuracy under attack per cycle")
    axes[2].set_ylabel("accuracy (fraction)")
    axes[2].set_ylim(0, 1)
    # Beside the plot, not over it: with FGSM at three radii, APGD and clean it covers curves.
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    for ax in axes:
        ax.set_xlabel("cycle")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # cycles are whole numbers
    generator = trial.get("config/generator") or "image"
    fig.suptitle(
        ctx.title(
            f"{ctx.exp.name} / {trial['trial_id']} "
            f"(schedule {trial.get('config/schedule')}, generator {generator})",
            100,
        )
    )
    name = ctx.save(fig, f"{trial['trial_id']}_cycles")
    return [f"![cycles of the best trial]({name})", ""]
