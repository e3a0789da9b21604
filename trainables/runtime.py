"""Where and how a trial computes: device, precision, memory format, seeding, RNG state."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Runtime:
    """The device a trial runs on and the speed settings that go with it.

    Chosen once per trial. bf16 autocast applies to training forward passes only: attacks and
    evaluation run in fp32 so that robust accuracies are not flattered by low-precision
    gradients.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", channels_last: bool = True):
        dev = select_device(device)
        if precision == "auto":
            amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
        elif precision == "bf16":
            amp = torch.bfloat16
        else:
            amp = None
        if dev.type == "cuda":
            # cuDNN picks the fastest kernels for the fixed batch shapes we train with.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(device=dev, amp_dtype=amp, channels_last=channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def module(self, module: nn.Module) -> nn.Module:
        """Move a freshly built module to this device and memory format."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def images(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def device_problem(preference: str) -> str | None:
    """Why device ``preference`` (auto, cpu, cuda or cuda:N) cannot be used here; None if it can."""
    if preference not in ("auto", "cpu") and preference != "cuda" and not preference.startswith("cuda:"):
        return f"--device {preference!r}: choose auto, cpu or cuda"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {preference}: torch sees no CUDA GPU on this machine; use --device cpu"
    return None


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(preference)
    if problem:
        raise RuntimeError(problem)
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) before any model is built."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def keep_freed_memory() -> bool:
    """Stop glibc returning large freed blocks to the OS after every step (Linux only).

    Each training or attack step allocates activations of tens of MB; by default glibc serves
    those with fresh ``mmap`` calls and unmaps them on free, so every step pays page faults in
    the kernel. Raising the mmap and trim thresholds lets the heap reuse the memory: on a
    2-core CPU PGD evaluation ran 30% faster (benchmarks/throughput.py shows the training
    side). The price is that a process keeps its peak heap until it exits.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        limit = 1 << 30
        return bool(libc.mallopt(m_mmap_threshold, limit) and libc.mallopt(m_trim_threshold, limit))
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False


def set_cpu_threads() -> None:
    """Use the CPUs Ray gave this trial (it exports OMP_NUM_THREADS), not every core."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def gpu_memory_fraction(assigned_gpus: float) -> float | None:
    """The share of one GPU's memory a trial may use, given its (fractional) GPU count.

    Ray schedules ``--gpus-per-trial 0.25`` as four trials per GPU but does not limit memory;
    a trial caps its own CUDA allocator at its share so that one trial cannot starve the
    others. Whole GPUs are not capped.
    """
    if assigned_gpus <= 0 or assigned_gpus >= 1:
        return None
    return float(assigned_gpus)


def cap_gpu_memory(runtime: Runtime, assigned_gpus: float) -> float | None:
    """Apply :func:`gpu_memory_fraction` to the trial's CUDA device; returns the cap used."""
    fraction = gpu_memory_fraction(assigned_gpus)
    if fraction is not None and runtime.device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(fraction, runtime.device)
        return fraction
    return None
