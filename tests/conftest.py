"""Shared test setup: ``tests/`` is on the import path, so tests can use ``loopback`` (fake servers on 127.0.0.1) and ``seeding``.

The CPU kernels are pinned as the ``mmsearch-r1`` command pins them (``mmsearch_r1.cpu_kernels``), so that
tests that train run on the same kernels as the command."""

from mmsearch_r1.cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()
