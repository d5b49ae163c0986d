"""A local Google Cloud Storage for the tests: gcp-storage-emulator on 127.0.0.1.

The emulator runs in this process (a server thread, in-memory storage) on a free port, and
``STORAGE_EMULATOR_HOST`` points the real ``google-cloud-storage`` client at it, so the code under test
talks HTTP to something that behaves like GCS without any network or credentials.

One emulator is shared by everything in the session, however many fixtures or ``with`` blocks ask for
it: a conftest that re-exports the fixtures and a test module that imports them do not start two.

Use from a conftest or a test module::

    from gcs_emulator import gcs_bucket, gcs_client, gcs_emulator  # noqa: F401
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

ENV = "STORAGE_EMULATOR_HOST"
_lock = threading.Lock()
_state: dict[str, Any] = {"users": 0, "server": None, "url": None, "saved_env": None}


def _free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, timeout: float = 10.0) -> None:
    """Poll the emulator's health check until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url + "/", timeout=1.0).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gcp-storage-emulator at {url} did not answer within {timeout} s")
        time.sleep(0.05)


def _start() -> str:
    from gcp_storage_emulator.server import create_server

    last_error: OSError | None = None
    for _ in range(5):  # another process may grab the free port between probe and bind
        port = _free_port()
        try:
            server = create_server("127.0.0.1", port, in_memory=True)
            break
        except OSError as exc:
            last_error = exc
    else:
        raise RuntimeError(f"could not bind gcp-storage-emulator: {last_error}")
    server.start()
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    _state.update(server=server, url=url, saved_env=os.environ.get(ENV))
    os.environ[ENV] = url
    return url


def _stop() -> None:
    server, saved = _state["server"], _state["saved_env"]
    _state.update(server=None, url=None, saved_env=None)
    if saved is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = saved
    server.stop()


@contextlib.contextmanager
def running_emulator() -> Iterator[str]:
    """Run (or share) the emulator; yields its URL with ``STORAGE_EMULATOR_HOST`` set to it.

    Raises ``ImportError`` if gcp-storage-emulator is not installed; the fixtures turn that into a skip.
    """
    import gcp_storage_emulator.server  # noqa: F401  (fail before touching any state)

    with _lock:
        if _state["users"] == 0:
            _start()
        _state["users"] += 1
        url = _state["url"]
    try:
        os.environ[ENV] = url  # a test's monkeypatch may have removed it
        yield url
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                _stop()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """The emulator's URL (``http://127.0.0.1:PORT``), with ``STORAGE_EMULATOR_HOST`` set for the session."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is not installed")
    pytest.importorskip("google.cloud.storage", reason="google-cloud-storage is not installed")
    with running_emulator() as url:
        yield url


@pytest.fixture
def gcs_client(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real ``google.cloud.storage.Client`` talking to the emulator (anonymous, dummy project)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv(ENV, gcs_emulator)
    return storage.Client(project="ztfcat-test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs_bucket(gcs_client: Any) -> Any:
    """A new, empty bucket with a unique name (the emulator's storage is shared by the session)."""
    return gcs_client.create_bucket(f"ztfcat-test-{uuid.uuid4().hex[:12]}")
