"""What this machine computes with: the CPU's matrix features (Linux `/proc/cpuinfo`)
and the GPUs TensorFlow sees.

The CPU part reads a file and needs no TensorFlow, so that benchmarks and defaults
(mixed precision, XLA) can ask before TensorFlow starts.
"""

from __future__ import annotations

import platform
from pathlib import Path

#: Where Linux lists the CPU's feature flags.
CPUINFO = Path("/proc/cpuinfo")
#: The flags of bfloat16 matrix hardware, which oneDNN (TensorFlow's CPU kernels) uses
#: for bfloat16 convolutions and matmuls: AVX512_BF16 (Cooper Lake, Zen 4 on), AMX
#: (Sapphire Rapids on; `amx_tile` is AMX's base, `amx_bf16` its bfloat16 unit).  Without
#: them bfloat16 is converted to float32 and back around every operation.
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


def _first_cpu_field(name: str, cpuinfo: Path | None) -> str | None:
    """The value of `name` for the first CPU in `cpuinfo` (default `CPUINFO`); None where
    the file cannot be read or has no such field (not Linux)."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The feature flags of the first CPU in `cpuinfo` (default `CPUINFO`); None where
    the file cannot be read or lists none (not Linux)."""
    flags = _first_cpu_field("flags", cpuinfo)
    return None if flags is None else frozenset(flags.split())


def cpu_model(cpuinfo: Path | None = None) -> str:
    """The CPU's model name, as benchmarks report it beside their figures."""
    return _first_cpu_field("model name", cpuinfo) or platform.processor() or "unknown CPU"


def cpu_bf16_features(cpuinfo: Path | None = None) -> tuple[str, ...] | None:
    """Which of `BF16_FLAGS` the CPU has (empty: none), None where unknown."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else tuple(f for f in BF16_FLAGS if f in flags)


def cpu_has_fast_bfloat16(cpuinfo: Path | None = None) -> bool | None:
    """Whether the CPU has bfloat16 matrix units (AVX512_BF16 or AMX), None where unknown."""
    features = cpu_bf16_features(cpuinfo)
    return None if features is None else bool({"avx512_bf16", "amx_bf16"} & set(features))


def cpu_has_avx512(cpuinfo: Path | None = None) -> bool | None:
    """Whether the CPU has AVX-512 (`avx512f`), None where unknown.  It decides the
    faster training step: oneDNN's AVX-512 kernels beat XLA's code there, XLA wins on
    AVX2-only CPUs (`benchmarks/train_step.py`)."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else "avx512f" in flags


def gpus() -> list[str]:
    """The GPUs TensorFlow sees, by device name (e.g. `/physical_device:GPU:0`)."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]
