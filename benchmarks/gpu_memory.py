"""GPU memory of one trial of each trainable, and how many trials fit on a GPU.

    python benchmarks/gpu_memory.py --data-dir ../shared/data          # on a machine with a GPU

For each trainable, one trial runs one short iteration (training steps, the validation
evaluation with PGD-40, and the final test evaluation) on CUDA, and the script prints the
allocator's peak (``max_memory_reserved``, what the trial really holds) plus the CUDA context,
and the ``--gpus-per-trial`` fraction that leaves 25% headroom on the current GPU.

Without a GPU it prints the part that can be computed exactly on a CPU: the dataset, model and
optimiser tensors a trial keeps on its device (a lower bound: activations, attack buffers,
cuDNN workspaces and the CUDA context come on top).
"""

from __future__ import annotations

import argparse
import math

import torch

from trainables import TRAINABLES, get_spec
from trainables.data import load_data
from trainables.reporting import MemoryReporter
from trainables.runtime import Runtime
from trainables.trial import run_trial

#: Small but complete runs: every code path of a trial, a short time on a GPU.
SHORT = {
    "classic": {"epochs": 1, "train_subset": 5120},
    "wgan_gp": {"iterations": 1, "gen_steps": 20, "stages": (10, 20), "ref_epochs": 1},
    "adaptive_ratio": {"cycles": 1, "cycle_steps": 20, "k": 4, "pretrain_epochs": 1, "train_subset": 5120},
}


def tensor_bytes(module_or_state) -> int:
    if isinstance(module_or_state, torch.nn.Module):
        tensors = list(module_or_state.parameters()) + list(module_or_state.buffers())
    else:
        tensors = [v for v in module_or_state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def static_bytes(name: str, data_dir) -> dict[str, int]:
    """Dataset splits + models + Adam state of one trial, computed on the CPU."""
    spec = get_spec(name)
    cfg = spec.config_cls.from_dict(
        {**SHORT[name], "device": "cpu", "train_subset": 0, "data_dir": data_dir or ""}
    )
    rt = Runtime.create("cpu", "fp32", True)
    data = load_data(cfg.dataset, rt.device, data_dir=data_dir)
    dataset = sum(
        s.x.numel() * s.x.element_size() + s.y.numel() * 8 for s in (data.train, data.val, data.test)
    )
    if name == "wgan_gp":
        from trainables.models import ClassicClassifier, Critic, Generator

        models = [Generator(), Critic(), ClassicClassifier(), ClassicClassifier()]  # + the reference
    elif name == "adaptive_ratio":
        from trainables.models import ClassicClassifier, PerturbationGenerator

        models = [ClassicClassifier(), PerturbationGenerator()]
    else:
        from trainables.models import ClassicClassifier

        models = [ClassicClassifier()]
    weights = sum(tensor_bytes(m) for m in models)
    params = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
    return {"dataset": dataset, "weights": weights, "adam": 2 * params, "grads": params}


def measure(name: str, data_dir) -> tuple[int, int]:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    config = {**SHORT[name], "device": "cuda", "robust_n": 1000, "test_robust_n": 1000}
    if data_dir:
        config["data_dir"] = data_dir
    run_trial(get_spec(name), config, MemoryReporter())
    return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--trainables", nargs="+", default=list(TRAINABLES), choices=list(TRAINABLES))
    args = parser.parse_args()
    mib = 1024**2
    if not torch.cuda.is_available():
        print("no CUDA device: tensors a trial keeps on its device (lower bound, MiB)")
        print(f"{'trainable':<16}{'dataset':>9}{'weights':>9}{'grads':>8}{'adam':>8}{'total':>8}")
        for name in args.trainables:
            b = static_bytes(name, args.data_dir)
            print(
                f"{name:<16}{b['dataset'] / mib:>9.0f}{b['weights'] / mib:>9.1f}{b['grads'] / mib:>8.1f}"
                f"{b['adam'] / mib:>8.1f}{sum(b.values()) / mib:>8.0f}"
            )
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.zeros(1, device="cuda")
    context = torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0] - torch.cuda.memory_reserved()
    print(f"{torch.cuda.get_device_name(0)}: {total / mib:.0f} MiB; CUDA context ~{context / mib:.0f} MiB")
    header = ("trainable", "peak alloc", "peak reserved", "+context", "trials/GPU", "fraction")
    print(f"{header[0]:<16}{header[1]:>11}{header[2]:>14}{header[3]:>10}{header[4]:>11}{header[5]:>9}")
    for name in args.trainables:
        allocated, reserved = measure(name, args.data_dir)
        need = (reserved + context) * 1.25
        per_gpu = max(1, math.floor(total / need))
        fraction = 1 / 2 ** math.floor(math.log2(per_gpu))  # a power of two divides the GPU evenly
        print(
            f"{name:<16}{allocated / mib:>11.0f}{reserved / mib:>14.0f}{(reserved + context) / mib:>10.0f}"
            f"{per_gpu:>11}{fraction:>9.3g}"
        )


if __name__ == "__main__":
    main()
