"""Shared test setup: ``tests/`` is on the import path, so tests can use ``loopback`` (fake servers on 127.0.0.1) and ``seeding``."""
