"""Services the tests start as plain processes on loopback: the pertstore API and an S3 server (moto)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``url`` answers 200 (or fail with the process's exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def process(
    cmd: list[str], *, env: dict[str, str] | None = None, ready_url: str | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` for the duration of the block; at the end its whole process group is terminated,
    then killed (a ``sh -c`` command's children included)."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        if ready_url:
            wait_http(ready_url, proc)
        yield proc
    finally:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        _signal_group(proc, signal.SIGKILL)  # children that outlived the leader


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def api_server(store_uri: str, *, env: dict[str, str] | None = None, args: list[str] = ()) -> Iterator[str]:
    """``pertstore serve`` on a free loopback port; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "pertstore.cli", "serve", "--store", store_uri, "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with process(cmd, env=env, ready_url=f"{url}/v1/health"):
        yield url


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3-compatible server on loopback; yields the environment that points clients at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=S3_CREDENTIALS,
        ready_url=f"{url}/moto-api/",
    ):
        yield {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": url}


def make_bucket(env: dict[str, str], bucket: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=bucket)
