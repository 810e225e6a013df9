"""One CPU kernel path on every x86-64 machine, so that a CPU run gives the same numbers wherever it runs.

Torch, MKL and oneDNN each pick their CPU kernels by what the processor offers (AVX2, AVX-512), and each
path rounds differently: one forward and backward pass of the demo's tiny model gives other bits under
``ATEN_CPU_CAPABILITY=default`` than under AVX2. Thousands of training steps turn that rounding into another
model, so without a pin the demo trained on an AVX-512 machine is not the one trained on an AVX2 machine
(docs/results.md, "Machines"). ``pin_cpu_kernels`` asks all three libraries for their AVX2 path, which every
x86-64 server CPU of the last decade has; on an AVX2 machine that is the path they take anyway (the same bits,
checked on the demo's model), and on an AVX-512 machine it is meant to trade a little speed for the same
numbers, with the same thread counts (the configs fix them). That is not yet checked on a second CPU type,
and MKL documents its reproducibility setting for Intel processors.

The pins are environment variables, read when torch and its libraries load: the ``mmsearch-r1`` command sets
them before it imports torch. A variable already set is left as it is, so ``ATEN_CPU_CAPABILITY=avx512
mmsearch-r1 ...`` takes the native path back. GPU kernels are not affected.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first processor in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def pin_cpu_kernels(environ: MutableMapping[str, str] | None = None, flags: set[str] | None = None, machine: str | None = None) -> dict[str, str]:
    """Set the pins not set yet, on an x86-64 CPU with AVX2 and FMA, before torch is imported; return those set.

    >>> pin_cpu_kernels({}, {"avx2", "fma"}, "x86_64") == PINS
    True
    >>> pin_cpu_kernels({"MKL_CBWR": "AUTO"}, {"avx2", "fma"}, "x86_64")
    {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2'}
    >>> pin_cpu_kernels({}, {"sse4_2"}, "x86_64"), pin_cpu_kernels({}, set(), "aarch64")
    ({}, {})
    """
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64") or (environ is os.environ and "torch" in sys.modules):
        return {}  # other CPUs have other kernels; once torch is loaded the variables would not be read
    if not {"avx2", "fma"} <= (cpu_flags() if flags is None else flags):
        return {}
    pinned = {key: value for key, value in PINS.items() if key not in environ}
    environ.update(pinned)
    return pinned
