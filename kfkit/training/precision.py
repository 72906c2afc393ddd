"""Where and how precisely a worker trains: the device and backend, and training.precision as an autocast dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfkit.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import torch

__all__ = ["device_and_backend", "check_precision", "resolve_precision"]


def device_and_backend(device_choice: str, backend_choice: str) -> tuple[str, str]:
    """training.device and training.backend resolved here: ``auto`` is CUDA and NCCL where torch sees a GPU.

    Raises:
        TrainingError: CUDA or NCCL was asked for where there is no CUDA device.
    """
    import torch

    device = device_choice
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"training.device=cuda but torch {torch.__version__} sees no CUDA device here; "
            "use training.device=auto or cpu, or run on a GPU node"
        )
    backend = backend_choice if backend_choice != "auto" else ("nccl" if device == "cuda" else "gloo")
    if backend == "nccl" and device != "cuda":
        raise TrainingError("training.backend=nccl needs CUDA devices; use training.backend=gloo (or auto) on the CPU")
    return device, backend


def check_precision(precision: str, device: str) -> None:
    """Refuse fp16 on the CPU before anything starts (``device`` is cpu, cuda or cuda:N).

    Raises:
        ConfigError: fp16 was asked for on the CPU, where autocast supports only bfloat16.
    """
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError(
            "training.precision=fp16 needs a CUDA device, and this run trains on the CPU; "
            "use training.precision=bf16 (or fp32, or auto) on the CPU"
        )


def resolve_precision(precision: str, device: str) -> tuple[str, torch.dtype | None]:
    """The precision actually used and its autocast dtype (None = plain fp32, no autocast).

    ``auto`` is bf16 on a CUDA device that supports it and fp32 everywhere else (on the CPU, bf16
    autocast is slower than fp32 for small MLPs on most processors; ask for it explicitly).

    Raises:
        ConfigError: fp16 on the CPU, or bf16 on a GPU without bfloat16 support.
    """
    import torch

    check_precision(precision, device)
    cuda = device.startswith("cuda")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"training.precision=bf16: the GPU {torch.cuda.get_device_name(device)} has no bfloat16 support; "
            "use training.precision=fp16 (with loss scaling) or fp32"
        )
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return precision, dtype
