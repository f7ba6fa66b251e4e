"""keras_alexnet.hardware: the CPU's bfloat16 and AVX-512 features from /proc/cpuinfo, the
GPUs."""

import shutil
import subprocess
from pathlib import Path

import pytest
import tensorflow as tf

from keras_alexnet import hardware
from tests.fakes import write_cpuinfo


@pytest.mark.parametrize("extra, features, fast", [
    ("", (), False),  # AVX2 only
    ("avx512f avx512bw", (), False),  # AVX-512 without its bfloat16 instructions
    ("avx512f avx512_bf16", ("avx512_bf16",), True),  # Cooper Lake, Zen 4
    ("avx512_bf16 amx_bf16 amx_tile amx_int8", ("amx_bf16", "amx_tile", "avx512_bf16"), True),
    ("amx_tile", ("amx_tile",), False),  # AMX's base alone has no bfloat16 unit
])
def test_the_bfloat16_features_are_read_from_the_flags_line(tmp_path, extra, features, fast):
    path = write_cpuinfo(tmp_path, extra)
    assert hardware.cpu_flags(path) >= {"avx2", "fma"}
    assert hardware.cpu_bf16_features(path) == features
    assert hardware.cpu_has_fast_bfloat16(path) is fast
    assert hardware.cpu_has_avx512(path) is ("avx512f" in extra)


def test_an_unreadable_or_flagless_cpuinfo_is_unknown_not_none_found(tmp_path):
    (tmp_path / "flagless").write_text("processor\t: 0\nmodel name\t: Apple M2\n")
    for path in (tmp_path / "missing", tmp_path / "flagless"):
        assert hardware.cpu_flags(path) is None
        assert hardware.cpu_bf16_features(path) is None
        assert hardware.cpu_has_fast_bfloat16(path) is None
        assert hardware.cpu_has_avx512(path) is None


def test_the_cpu_model_is_the_first_cpus_model_name(tmp_path):
    (tmp_path / "flagless").write_text("processor\t: 0\nmodel name\t: Apple M2\n")
    assert hardware.cpu_model(tmp_path / "flagless") == "Apple M2"
    assert hardware.cpu_model(tmp_path / "missing")  # something to print, not an error


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or not shutil.which("lscpu"),
                    reason="needs Linux's /proc/cpuinfo and lscpu")
def test_this_machines_flags_agree_with_lscpu():
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                           env={"LC_ALL": "C"}).stdout.splitlines()
    flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("Flags:"))
    assert hardware.cpu_flags() == frozenset(flags)


def test_gpus_are_tensorflows_physical_gpus():
    assert hardware.gpus() == [d.name for d in tf.config.list_physical_devices("GPU")]
