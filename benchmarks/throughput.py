"""Training throughput of each trainable against a plain PyTorch loop of the same models, and
against the project's own code at an earlier revision.

    python benchmarks/throughput.py --data-dir ../shared/data [--device cuda] [--seconds 20]
    python benchmarks/throughput.py --data-dir ../shared/data --trainables learned_attacker \
        --baseline e7c28c3

``learned_attacker`` is ``adaptive_ratio`` with the README main job's prior (the gradient-
following attacker of Jang et al.); it has no plain loop. ``--baseline REV`` measures "ours"
again with the code of revision REV (``git archive``, imported ahead of this checkout), in the
same run, and prints the ratio. GFLOP/s: the multiply-adds of one iteration counted by
``torch.utils.flop_counter`` times iterations per second, beside the device's own measured
peak (a large fp32 matrix product, or bf16 on CUDA).

"ours" runs the trainable's own program (``train_iteration``: tensors on the device, shuffled
there, shared step functions, no per-step host sync, channels_last, bf16 autocast on CUDA, and
glibc's allocator told to keep freed memory, as ``run_trial`` does).
"plain" is what a notebook does with the same networks and the same step structure: a
torchvision dataset with per-image transforms behind a ``DataLoader`` (``--workers``
processes), ``.to(device)`` per batch, fp32, and ``loss.item()`` every step for logging. Each
trainable is measured in a fresh process, plain first (the allocator setting only affects what
comes after it); the table prints images per second and the ratio. Images are the real
training images consumed (critic, classifier and generator batches alike).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from trainables import get_spec
from trainables.data import load_data, resolve_data_root
from trainables.models import ClassicClassifier, Critic, Generator, PerturbationGenerator
from trainables.runtime import Runtime, keep_freed_memory, seed_everything
from trainables.steps import run_steps

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "classic": {"epochs": 1},
    "wgan_gp": {"iterations": 1, "gen_steps": 1, "n_critic": 5, "cls_rate": 0.5},
    "adaptive_ratio": {"cycles": 1, "k": 2, "cycle_steps": 10, "pretrain_epochs": 0},
    "learned_attacker": {"cycles": 1, "cycle_steps": 10, "pretrain_epochs": 0},
}


def trainable_of(name: str) -> tuple[str, dict]:
    """The trainable a measured name runs, and its settings."""
    if name != "learned_attacker":
        return name, CONFIGS[name]
    from search_spaces.adaptive_ratio import PRIORS

    (prior,) = [p for p in PRIORS if p.name == "learned_attacker"]
    return "adaptive_ratio", {**prior.params, **CONFIGS[name]}


def plain_loader(dataset: str, root, batch_size: int, workers: int):
    import torchvision
    import torchvision.transforms as T

    transform = T.Compose([T.Pad(2), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    if dataset == "synthetic":
        data = load_data("synthetic", torch.device("cpu"))
        ds = torch.utils.data.TensorDataset(data.train.x, data.train.y)
    else:
        cls = torchvision.datasets.MNIST if dataset == "mnist" else torchvision.datasets.FashionMNIST
        ds = cls(str(root), train=True, download=True, transform=transform)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers
    )


def endless(loader):
    while True:
        yield from loader


def plain_classic(device, batches, cfg):
    model = ClassicClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        step.log.append(loss.item())
        return len(y)

    step.log = []
    return step


def plain_wgan_gp(device, batches, cfg):
    gen, critic, cls = Generator().to(device), Critic().to(device), ClassicClassifier().to(device)
    g_opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    c_opt = torch.optim.Adam(cls.parameters(), lr=1e-3)
    credit = [0.0]

    def step():
        n = 0
        for _ in range(cfg["n_critic"]):
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            fake = gen(torch.randn(len(y), 128, device=device), y).detach()
            a = torch.rand(len(y), 1, 1, 1, device=device)
            xh = (a * x + (1 - a) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(xh, y).sum(), xh, create_graph=True)
            loss = (
                critic(fake, y).mean()
                - critic(x, y).mean()
                + 10 * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
            )
            d_opt.zero_grad()
            loss.backward()
            d_opt.step()
            step.log.append(loss.item())
            n += len(y)
        y = torch.randint(0, 10, (len(y),), device=device)
        g_loss = -critic(gen(torch.randn(len(y), 128, device=device), y), y).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        step.log.append(g_loss.item())
        credit[0] += cfg["cls_rate"]
        while credit[0] >= 1:
            credit[0] -= 1
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            fake = gen(torch.randn(len(y), 128, device=device), y).detach()
            c_loss = 0.5 * F.cross_entropy(cls(x), y) + 0.5 * F.cross_entropy(cls(fake), y)
            c_opt.zero_grad()
            c_loss.backward()
            c_opt.step()
            step.log.append(c_loss.item())
            n += len(y)
        return n

    step.log = []
    return step


def plain_adaptive_ratio(device, batches, cfg):
    cls, pert = ClassicClassifier().to(device), PerturbationGenerator().to(device)
    c_opt = torch.optim.Adam(cls.parameters(), lr=1e-3)
    p_opt = torch.optim.Adam(pert.parameters(), lr=1e-3)

    def step():
        n = 0
        cls.eval()
        for _ in range(cfg["k"] * cfg["cycle_steps"]):
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            loss = F.softmax(cls(pert(x)), 1).gather(1, y[:, None]).mean()
            p_opt.zero_grad()
            loss.backward()
            p_opt.step()
            step.log.append(loss.item())
            n += len(y)
        cls.train()
        for _ in range(cfg["cycle_steps"]):
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            half = len(y) // 2
            mixed = torch.cat([x[:half], pert(x[half:]).detach()])
            loss = F.cross_entropy(cls(mixed), y)
            c_opt.zero_grad()
            loss.backward()
            c_opt.step()
            step.log.append(loss.item())
            n += len(y)
        return n

    step.log = []
    return step


PLAIN = {"classic": plain_classic, "wgan_gp": plain_wgan_gp, "adaptive_ratio": plain_adaptive_ratio}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run_once, device, seconds: float, warmup: int = 1) -> float:
    """Images per second of ``run_once() -> images`` over about ``seconds`` after warm-up."""
    for _ in range(warmup):
        run_once()
    sync(device)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images += run_once()
    sync(device)
    return images / (time.perf_counter() - start)


def bench(name, args, data, device) -> tuple[float, float | None, float]:
    """Images per second of ours and of the plain loop (None where there is none), and the
    FLOPs per image of one of our iterations."""
    trainable, settings = trainable_of(name)
    spec = get_spec(trainable)
    batch = 64 if name == "wgan_gp" else args.batch_size
    values = {**settings, "dataset": args.dataset, "batch_size": batch, "device": device.type}
    if name == "wgan_gp":
        values["ref_epochs"] = 1
    cfg = spec.config_cls.from_dict(values)
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    seed_everything(0)
    program = spec.build(cfg, rt, data)
    iterations = itertools.count(1)

    def ours_once():
        before = program.images_seen
        if name == "classic":  # an epoch is long on a CPU: time 20 of its steps, same path
            out = run_steps((program.stream.next() for _ in range(20)), program.step)
        else:
            out = program.train_iteration(next(iterations))
        torch.stack(list(out.values())).tolist()  # the trial loop's one sync per iteration
        return program.images_seen - before

    plain = None
    if name in PLAIN and not args.ours_only:
        # The plain loop runs first, with the default allocator; ours then turns on what
        # run_trial turns on (keep_freed_memory), as a separate trial process would have it.
        batches = endless(plain_loader(args.dataset, resolve_data_root(args.data_dir), batch, args.workers))
        plain_step = PLAIN[name](device, batches, CONFIGS[name])
        plain = timed(plain_step, device, args.seconds, warmup=3)
        batches.close()  # shut the DataLoader workers down before the next loader forks
    keep_freed_memory()
    ours = timed(ours_once, device, args.seconds)
    with _Flops(display=False) as counter:
        images = ours_once()
    return ours, plain, counter.get_total_flops() / images


class _Flops(FlopCounterMode):
    """torch's FLOP counter without its per-module attribution, whose backward hooks break the
    ``torch.autograd.grad`` calls of the attacks (a RuntimeError in torch 2.14)."""

    def __enter__(self):
        from torch.utils.flop_counter import _FlopCounterMode

        self.flop_counts.clear()
        self.mode = _FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        done, self.mode = self.mode.__exit__(*args), None
        return done

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            self.flop_counts["Global"][func_packet] += flops
        return out


def peak_gflops(device) -> float:
    """The device's measured peak: a 4096 x 4096 matrix product (fp32; bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    a @ a
    sync(device)
    reps, start = 5, time.perf_counter()
    for _ in range(reps):
        a @ a
    sync(device)
    return 2 * 4096**3 * reps / (time.perf_counter() - start) / 1e9


def baseline_tree(rev: str) -> str:
    """The project's files at ``rev`` in a temporary folder (``git archive``)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix=f"throughput-{rev}-")
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "synthetic"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    parser.add_argument("--trainables", nargs="+", default=list(PLAIN), choices=list(CONFIGS))
    parser.add_argument("--baseline", help="a git revision whose own code is measured too, in this run")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one trainable
    parser.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rt = Runtime.create(args.device)
    device = rt.device
    if args.one:
        torch.manual_seed(0)
        data = load_data(args.dataset, device, data_dir=args.data_dir, channels_last=rt.channels_last)
        ours, plain, flops = bench(args.one, args, data, device)
        print(json.dumps({"ours": ours, "plain": plain, "flops": flops}), flush=True)
        return
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU x{torch.get_num_threads()} threads"
    )
    peak = peak_gflops(device)
    plain = f"DataLoader with {args.workers} workers, fp32"
    print(f"device: {name}, measured peak {peak:.0f} GFLOP/s; plain loop: {plain}; {args.seconds:.0f}s each")
    base = baseline_tree(args.baseline) if args.baseline else None
    head = f"{'trainable':<18}{'ours img/s':>11}{'plain img/s':>12}{'ratio':>7}{'GFLOP/s':>9}{'of peak':>8}"
    print(head + (f"{args.baseline + ' img/s':>17}{'ours/base':>10}" if base else ""), flush=True)
    # One process per trainable: the allocator setting of one measurement must not leak into
    # the next plain loop.
    forwarded = [a for a in sys.argv[1:] if a != "--trainables" and a not in CONFIGS]
    forwarded = [
        a for i, a in enumerate(forwarded) if a != "--baseline" and forwarded[i - 1 : i] != ["--baseline"]
    ]
    for trainable in args.trainables:
        ours = measure(forwarded, trainable)
        line = f"{trainable:<18}{ours['ours']:>11.0f}"
        plain_ips = ours["plain"]
        line += f"{plain_ips:>12.0f}{ours['ours'] / plain_ips:>6.2f}x" if plain_ips else f"{'-':>12}{'-':>7}"
        gflops = ours["flops"] * ours["ours"] / 1e9
        line += f"{gflops:>9.1f}{gflops / peak:>8.1%}"
        if base:
            then = measure([*forwarded, "--ours-only"], trainable, base)
            line += f"{then['ours']:>17.0f}{ours['ours'] / then['ours']:>9.2f}x"
        print(line, flush=True)


def measure(forwarded: list[str], trainable: str, tree: str | None = None) -> dict:
    """One trainable measured in a fresh process, with the code of ``tree`` when given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, __file__, *forwarded, "--one", trainable],
        check=True, env=env if tree else None, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
