"""The CPU kernel pins: set on x86-64 with AVX2 before torch loads, never over the user's own settings."""

import doctest
import subprocess
import sys

import mmsearch_r1.cpu_kernels as cpu_kernels
from mmsearch_r1.cpu_kernels import PINS, cpu_flags, pin_cpu_kernels


def test_doctests():
    assert doctest.testmod(cpu_kernels).failed == 0


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "none") == set()


def test_the_users_settings_win_and_a_machine_without_avx2_gets_none():
    environ = {"ATEN_CPU_CAPABILITY": "avx512"}
    assert pin_cpu_kernels(environ, {"avx2", "fma"}, "x86_64") == {k: v for k, v in PINS.items() if k != "ATEN_CPU_CAPABILITY"}
    assert environ["ATEN_CPU_CAPABILITY"] == "avx512"
    assert pin_cpu_kernels({}, {"avx"}, "x86_64") == {} and pin_cpu_kernels({}, {"avx2", "fma"}, "arm64") == {}


def test_the_command_pins_before_torch_loads_and_torch_takes_the_pin():
    """The variables are set by the command before torch loads. On an AVX2 machine torch reports AVX2 with or
    without them; that MKL and oneDNN follow them is their documented behaviour, not checked here."""
    if not pin_cpu_kernels({}):
        import pytest

        pytest.skip("not an x86-64 CPU with AVX2")
    code = (
        "import os, sys; sys.argv = ['mmsearch-r1', '--help'];"
        "from mmsearch_r1.cli import main\n"
        "try:\n main()\nexcept SystemExit:\n pass\n"
        "import torch; print(os.environ['ATEN_CPU_CAPABILITY'], os.environ['MKL_CBWR'], torch.backends.cpu.get_cpu_capability())"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in PINS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "avx2 AVX2 AVX2"
