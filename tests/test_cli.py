"""The command a user runs: flags, env vars, port 0, and state that survives kill -9."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import jpeg
from conftest import spawn_mock as start

HEADERS = {"Authorization": "Bearer sd_cli_test"}


def test_help_lists_every_flag():
    output = subprocess.run(
        [sys.executable, "-m", "mockserver.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--host",
        "--port",
        "--data-dir",
        "--ephemeral",
        "--clock",
        "--public-url",
        "--log-level",
        "--api-key",
        "--prompt-seconds",
        "--prompt-polls",
        "--idempotency",
    ):
        assert flag in output


def test_bad_clock_is_a_clear_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "mockserver.cli", "serve", "--clock", "yesterday"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "frozen:<ISO time>" in result.stderr


def test_env_vars_and_public_url(tmp_path: Path):
    process, url = start(
        env={"ASTRIA_MOCK_EPHEMERAL": "1", "ASTRIA_MOCK_PUBLIC_URL": "https://mock.example"}
    )
    try:
        tune = httpx.get(f"{url}/tunes/690204", headers=HEADERS).json()
        assert tune["url"] == "https://mock.example/tunes/690204.json"
    finally:
        process.terminate()
        process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_state_survives_kill_9(tmp_path: Path):
    args = ("--data-dir", str(tmp_path), "--prompt-seconds", "0.5", "--port", str(free_port()))
    process, url = start(*args)
    files = [("tune[images][]", ("face.jpg", jpeg(), "image/jpeg"))]
    data = {"tune[title]": "keep me", "tune[name]": "man", "tune[model_type]": "faceid"}
    tune = httpx.post(f"{url}/tunes", data=data, files=files, headers=HEADERS).json()
    prompt = httpx.post(
        f"{url}/tunes/690204/prompts",
        json={"prompt": {"text": f"<faceid:{tune['id']}:1> a man"}},
        headers=HEADERS,
    ).json()
    assert prompt["images"] == []
    process.send_signal(signal.SIGKILL)
    process.wait(10)

    process, url = start(*args)
    try:
        again = httpx.get(f"{url}/tunes/{tune['id']}", headers=HEADERS).json()
        assert again == tune
        assert httpx.get(tune["orig_images"][0]).content == jpeg()
        deadline = time.monotonic() + 10
        while not (done := httpx.get(f"{url}/prompts/{prompt['id']}", headers=HEADERS).json())[
            "images"
        ]:
            assert time.monotonic() < deadline, (
                "the pending prompt never completed after the restart"
            )
            time.sleep(0.05)
        assert httpx.get(done["images"][0]).status_code == 200
    finally:
        process.terminate()
        process.wait(10)


def test_pending_callback_is_delivered_after_kill_9(tmp_path: Path, receiver):
    args = ("--data-dir", str(tmp_path), "--callback-retries", "10", "--port", str(free_port()))
    args += ("--lease-seconds", "2")  # an attempt cut by the kill is taken over after 2 s
    receiver.fail_next = 1000
    process, url = start(*args)
    body = {
        "tune": {
            "title": "t",
            "name": "man",
            "model_type": "faceid",
            "callback": f"{receiver.url}/hook",
            "image_urls": ["https://example.com/a.jpg"],
        }
    }
    assert httpx.post(f"{url}/tunes", json=body, headers=HEADERS).status_code == 201
    receiver.wait_for(1)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    receiver.fail_next = 0

    process, url = start(*args)
    try:
        log = httpx.get(
            f"{url}/_mock/callbacks", params={"wait": 15, "status": "delivered"}, timeout=20
        ).json()
        [entry] = log["callbacks"]
        # The failed attempt before the kill counts, recorded or cut short (interrupted).
        assert entry["attempts"] + entry["interrupted"] >= 2
        assert receiver.received[-1]["json"]["tune"]["title"] == "t"
    finally:
        process.terminate()
        process.wait(10)


def test_proxy_command_forwards_and_logs(live_api):
    upstream = str(live_api.client.base_url).rstrip("/")
    process, url = start("--upstream", upstream, command="proxy")
    try:
        tune = httpx.get(f"{url}/tunes/690204", headers=HEADERS)
        assert tune.status_code == 200
        assert tune.json()["id"] == 690204
        httpx.post(
            f"{url}/tunes/690204/prompts",
            json={"prompt": {"text": "x", "oops": 1}},
            headers=HEADERS,
        )
        [violation] = httpx.get(f"{url}/_mock/violations", headers=HEADERS).json()["violations"]
        assert violation["field"] == "oops"
    finally:
        process.terminate()
        process.wait(10)


def test_missing_scenario_file_is_a_clear_error(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mockserver.cli",
            "serve",
            "--port",
            "0",
            "--ephemeral",
            "--scenario",
            str(tmp_path / "nope.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr
