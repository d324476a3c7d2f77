"""Model FLOPs utilisation: achieved training FLOP/s over what the device's matmuls can reach.

On GPUs the peak is the datasheet's dense bf16 figure. A CPU has no such number that holds in
practice (clock, cores, shared load), so it is measured: the best of a few large bf16 matmuls.
"""

import time

import torch

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets; first match of the
# device name wins. Other GPUs are measured like CPUs.
GPU_BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def measure_matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.bfloat16, sizes: tuple[int, ...] = (1024, 2048),
                        repeats: int = 10) -> float:
    """FLOP/s of the fastest (n x n) @ (n x n) matmul over `sizes`, `repeats` each after one warm-up. Two
    sizes because which is faster varies with the load on a 2-core CPU (under load: 195 GFLOP/s at 1024,
    131 at 2048; idle: 400 and 391)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        for i in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: str, dtype: torch.dtype | None, best: float = 0.0, repeats: int = 10) -> float:
    """The peak MFU is measured against: the datasheet for known GPUs, else the better of `best` and a measurement
    here. Another process's load makes a measurement read low (mfu=99% against a peak read at a busy start), so a
    caller re-measures now and then and passes the best so far: its MFU can only become more accurate."""
    if device.startswith("cuda") and dtype == torch.bfloat16:
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_BF16_PEAK.items():
            if key in name:
                return flops
    return max(best, measure_matmul_peak(device, dtype or torch.float32, repeats=repeats))
