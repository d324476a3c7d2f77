"""Where and in what precision to run: the device, and bf16 autocast where the hardware has it.
Shared by training, SFT and evaluation."""

from pathlib import Path

import torch


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(setting: str, device: str) -> torch.dtype | None:
    """None means plain float32. bf16 autocast measured 1.5x faster than fp32 on the 2-core
    avx512_bf16 CPU for the tiny model (6.1k vs 4.0k tokens/s, without compile)."""
    if setting == "float32":
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    if setting != "auto":
        raise ValueError(f"dtype must be auto, float32 or bfloat16, not {setting!r}")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: str, dtype: torch.dtype | None):
    return torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None)
