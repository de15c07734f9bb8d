"""Scorer tests run offline: hub access is switched off, caches point at a temporary folder,
and any attempt to open a network connection fails the test."""

import importlib.util
import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="ttsvar-scorers-home-")
os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HOME=os.path.join(_HOME, "hf"),
    TORCH_HOME=os.path.join(_HOME, "torch"),
    HF_HUB_DISABLE_TELEMETRY="1",
)



def _load_testlib():
    """pytest runs with --import-mode=importlib, so test modules cannot import a sibling module
    by name; load the shared helpers once under a name the test modules import."""
    spec = importlib.util.spec_from_file_location("scorer_testlib", Path(__file__).with_name("scorer_testlib.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["scorer_testlib"] = module
    spec.loader.exec_module(module)


_load_testlib()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    real_connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a scorer test tried to open a network connection to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
