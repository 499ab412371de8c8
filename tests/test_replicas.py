"""Several mock processes on one database: a replica killed during a burst loses nothing,
``astria-mock worker`` renders for replicas that do not, and ``--workers`` shares one port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from conftest import Receiver, spawn_mock

KEY = "sd_replica_test"
HEADERS = {"Authorization": f"Bearer {KEY}"}
FAST = ("--prompt-seconds", "0.2", "--lease-seconds", "2", "--callback-timeout", "2")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_a_replica_killed_mid_burst_loses_no_prompt_and_no_callback(
    postgres_url: str, receiver: Receiver, tmp_path: Path
):
    receiver.delay = 0.5  # so that the killed replica has deliveries in flight
    shared = ("--db", postgres_url, "--data-dir", str(tmp_path), "--log-level", "warning", *FAST)
    doomed, doomed_url = spawn_mock(*shared)
    survivor, survivor_url = spawn_mock(*shared)
    accepted: list[int] = []
    try:
        with httpx.Client(headers=HEADERS, timeout=10) as client:

            def create(index: int) -> int | None:
                body = {"prompt": {"text": f"p{index}", "callback": f"{receiver.url}/hook"}}
                for url in (doomed_url, survivor_url)[index % 2 :]:
                    try:
                        response = client.post(f"{url}/tunes/690204/prompts", json=body)
                    except httpx.TransportError:
                        continue  # that replica is dead: the client retries on the other
                    assert response.status_code == 201, response.text
                    return int(response.json()["id"])
                return None

            with ThreadPoolExecutor(4) as pool:
                first = list(pool.map(create, range(80)))
                receiver.wait_for(10)  # both replicas are delivering (each takes 0.5 s)
                doomed.send_signal(signal.SIGKILL)
                doomed.wait()
                second = list(pool.map(create, range(80, 160)))
            accepted = [i for i in first + second if i is not None]
            assert len(accepted) == 160

            def all_delivered() -> bool:
                got = {int(r["json"]["prompt"]["id"]) for r in list(receiver.received)}
                return set(accepted) <= got

            wait_until(all_delivered, 60, "callbacks of accepted prompts are missing")
            done = client.get(f"{survivor_url}/prompts", params={"limit": 120}).json()
            done += client.get(
                f"{survivor_url}/prompts", params={"limit": 120, "before_id": done[-1]["id"]}
            ).json()
            assert {p["id"] for p in done} == set(accepted)
            assert all(p["trained_at"] and len(p["images"]) == 1 for p in done)
            image = client.get(done[0]["images"][0].replace(doomed_url, survivor_url))
            assert image.headers["content-type"] == "image/jpeg"

            log = client.get(
                f"{survivor_url}/_mock/callbacks",
                params={"status": "delivered", "count": 160, "wait": 30},
                timeout=40,
            ).json()["callbacks"]
    finally:
        stop(survivor)
        stop(doomed)

    assert len(log) == 160
    sends = Counter(r["headers"]["x-astria-mock-callback"] for r in receiver.received)
    interrupted = {str(entry["id"]) for entry in log if entry["interrupted"]}
    repeated = {callback_id for callback_id, count in sends.items() if count > 1}
    # Sent twice only where the killed replica was delivering it at that moment.
    assert interrupted, "the killed replica had no delivery in flight"
    assert repeated <= interrupted, (repeated, interrupted)
    assert len(sends) == 160


def test_a_worker_renders_for_a_replica_that_does_not(tmp_path: Path, receiver: Receiver):
    """SQLite shared by two processes: the API answers, the worker renders and calls back."""
    common = ("--data-dir", str(tmp_path), "--prompt-seconds", "0.1", "--log-level", "warning")
    api, url = spawn_mock(*common, "--no-generate")
    port = url.rsplit(":", 1)[1]
    worker, _ = spawn_mock(*common, command="worker", env={"ASTRIA_MOCK_PORT": port})
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
            body = {"prompt": {"text": "by the worker", "callback": f"{receiver.url}/w"}}
            created = client.post("/tunes/690204/prompts", json=body).json()
            [delivered] = receiver.wait_for(1)
            assert delivered["json"]["prompt"]["id"] == created["id"]
            finished = client.get(f"/prompts/{created['id']}").json()
            assert finished["trained_at"] is not None
            assert finished["images"][0].startswith(url)  # same flags: the API's own URLs
            image = client.get(finished["images"][0])
            assert image.headers["content-type"] == "image/jpeg"
    finally:
        stop(worker)
        stop(api)


def test_without_a_worker_a_no_generate_replica_leaves_prompts_pending(tmp_path: Path):
    api, url = spawn_mock("--data-dir", str(tmp_path), "--prompt-seconds", "0", "--no-generate")
    try:
        with httpx.Client(base_url=url, headers=HEADERS) as client:
            created = client.post("/tunes/690204/prompts", json={"prompt": {"text": "x"}}).json()
            time.sleep(1)
            assert client.get(f"/prompts/{created['id']}").json()["trained_at"] is None
    finally:
        stop(api)


def test_workers_processes_share_one_port_and_one_sequence(tmp_path: Path):
    server, url = spawn_mock("--data-dir", str(tmp_path), "--workers", "2")
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
            wait_until(
                lambda: client.get("/_mock/health").status_code == 200, 20, "workers never ready"
            )
            pids = set()

            def create(index: int) -> int:
                response = client.post(
                    "/tunes/690204/prompts", json={"prompt": {"text": f"w{index}"}}
                )
                assert response.status_code == 201, response.text
                return int(response.json()["id"])

            with ThreadPoolExecutor(6) as pool:
                ids = list(pool.map(create, range(60)))
            assert sorted(ids) == list(range(1, 61))

            def answering_pid(_index: int) -> int:
                # A new connection each time; concurrent ones, so that one process, busy,
                # leaves some to the other (which one accepts is the kernel's choice).
                with httpx.Client(base_url=url, timeout=10) as fresh:
                    return int(fresh.get("/_mock/health").json()["pid"])

            with ThreadPoolExecutor(8) as pool:
                for _ in range(10):
                    pids.update(pool.map(answering_pid, range(40)))
                    if len(pids) == 2:
                        break
            assert len(pids) == 2, pids
    finally:
        stop(server)
    assert os.path.exists(tmp_path / "mock.sqlite3")
