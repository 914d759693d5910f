"""`soraflow serve`: the job store on its own, then the API against real servers (uvicorn on free localhost
ports, a tiny random model, one torch thread): every route behind the key, jobs in every input mode,
progress, cancel, delete, limits with the CLI's messages, failures as failed jobs, a kill -9 and restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import httpx
import numpy as np
import pytest
from serve_helpers import API_KEY, ROOT, Server, make_random_model, pid_gone, wait_for

from soraflow.client import Client, ClientError, JobFailed
from soraflow.serve.security import RateLimiter
from soraflow.serve.store import JobStore, QueueFull
from soraflow.video import read_image, read_video, write_image

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = {"size": "128x128", "steps": 1000}  # ~10 s on one core: long enough to act on while it runs


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    server = Server(model, folder / "data", folder / "server.log", args=["--max-upload-mb", "1", "--rate-limit", "1000"])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(server):
    with Client(server.url, api_key=API_KEY, timeout=30) as c:
        yield c


def _wait_done(client, video_id, timeout=60.0):
    return client.wait(video_id, poll=0.05, timeout=timeout)


# ---------------------------------------------------------------------------------------------- the store alone


def _job(store, n=0, **kw):
    return store.submit(f"video_{n:024x}", {"args": {}}, {"prompt": "p"}, max_active=kw.get("max_active", 100))


def test_store_queue_bound_and_cancel(tmp_path):
    store = JobStore(tmp_path)
    _job(store, 1, max_active=2)
    _job(store, 2, max_active=2)
    with pytest.raises(QueueFull, match="limit 2"):
        _job(store, 3, max_active=2)
    assert store.cancel(f"video_{1:024x}").status == "cancelled"  # queued: at once
    _job(store, 3, max_active=2)  # a slot freed up


def test_store_claims_each_job_once_across_processes(tmp_path):
    store = JobStore(tmp_path)
    for n in range(40):
        _job(store, n)
    script = ("import sys, os; from soraflow.serve.store import JobStore; s = JobStore(sys.argv[1]); "
              "w = s.register_worker(os.getpid()); ids = []\n"
              "while (job := s.claim(w)) is not None: ids.append(job.id)\n"
              "print(' '.join(ids))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}) for _ in range(3)]
    claimed = [p.communicate(timeout=60)[0].split() for p in procs]
    every = [i for ids in claimed for i in ids]
    assert sorted(every) == sorted(f"video_{n:024x}" for n in range(40))  # each once, none lost


def test_store_recovers_a_dead_workers_job_then_gives_up(tmp_path):
    store = JobStore(tmp_path)
    job = _job(store)
    dead = subprocess.Popen(["true"])
    dead.wait()
    for attempt in (1, 2):
        worker = store.register_worker(dead.pid)  # a worker that died holding the job
        assert store.claim(worker).attempts == attempt
        assert store.recover(max_attempts=2, expire_after=60) == [job.id]
        state = store.get(job.id)
        assert state.status == ("queued" if attempt == 1 else "failed")
    assert "stopped (killed or crashed) during each of its 2 attempts" in state.error["message"]
    live = store.register_worker(os.getpid())
    _job(store, 1)
    assert store.claim(live) is not None and store.recover(max_attempts=2, expire_after=60) == []


def test_store_expiry_removes_files(tmp_path):
    store = JobStore(tmp_path)
    job = _job(store)
    (store.folder(job.id) / "inputs").mkdir(parents=True)
    worker = store.register_worker(1)
    store.claim(worker)
    store.finish(job.id, worker, "completed", expire_after=-1)
    assert store.expire() == [job.id]
    assert store.get(job.id) is None and not store.folder(job.id).exists()


def test_rate_limiter_refills():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.take("a")
    limiter.take("a")
    limiter.take("b")  # per client
    with pytest.raises(Exception) as refused:
        limiter.take("a")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "30"
    now[0] = 30.0
    limiter.take("a")


# ---------------------------------------------------------------------------------------------- starting


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "soraflow.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": "/tmp", **(env or {})},
                          timeout=120)


def test_serve_refuses_a_network_address_without_a_key(model, tmp_path):
    proc = _cli("serve", "--host", "0.0.0.0", "--model", str(model), "--data-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "soraflow: error: binding 0.0.0.0 makes the server reachable from the network; give it an API key "
        "(--api-key KEY or SORAFLOW_API_KEY), or bind 127.0.0.1"]
    proc = _cli("serve", "--model", str(tmp_path / "missing"), "--data-dir", str(tmp_path), "--port", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("soraflow: error: model folder") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- the API


def test_every_route_needs_the_key(server):
    job = httpx.post(f"{server.url}/v1/videos", headers=server.headers, json={"prompt": "a ball"}).json()
    routes = ["/", "/docs", "/openapi.json", "/healthz", "/v1/models", "/v1/videos", f"/v1/videos/{job['id']}",
              f"/v1/videos/{job['id']}/content", "/static-offline-docs/swagger-ui.css"]
    for headers in ({}, {"Authorization": "Bearer wrong-key-000000"}, {"X-API-Key": "nope"}):
        for path in routes:
            response = httpx.get(server.url + path, headers=headers)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
        assert httpx.post(f"{server.url}/v1/videos", headers=headers, json={"prompt": "x"}).status_code == 401
        assert httpx.delete(f"{server.url}/v1/videos/{job['id']}", headers=headers).status_code == 401
    for path in routes[:7] + routes[-1:]:
        assert httpx.get(server.url + path, headers=server.headers).status_code == 200, path
    assert httpx.get(server.url + "/docs", headers={"X-API-Key": API_KEY}).status_code == 200
    # the page: a sign-in form, then a cookie (not the key) for the browser
    page = httpx.get(server.url + "/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'action="/login"' in page.text
    assert httpx.post(server.url + "/login", data={"api_key": "wrong"}).status_code == 401
    signed_in = httpx.post(server.url + "/login", data={"api_key": API_KEY})
    assert signed_in.status_code == 303
    cookie = signed_in.cookies["soraflow_session"]
    assert API_KEY not in cookie and "httponly" in signed_in.headers["set-cookie"].lower()
    assert httpx.get(server.url + "/", cookies={"soraflow_session": cookie}).status_code == 200
    assert httpx.get(server.url + "/v1/videos", cookies={"soraflow_session": "forged"}).status_code == 401


def test_other_sites_and_rebound_names_are_refused(server):
    """A page on another site can make a browser POST here, and a DNS name rebound to 127.0.0.1 is
    same-origin for it: neither gets through, even with the key (a signed-in browser sends its cookie)."""
    url, key = f"{server.url}/v1/videos", server.headers
    evil = httpx.post(url, headers={**key, "Origin": "http://evil.example"}, json={"prompt": "x", "steps": 1})
    assert evil.status_code == 403 and "cross-site" in evil.json()["error"]["message"]
    assert httpx.post(server.url + "/login", headers={"Origin": "http://evil.example"},
                      data={"api_key": API_KEY}).status_code == 403
    rebound = httpx.get(url, headers={**key, "Host": f"evil.example:{server.port}"})
    assert rebound.status_code == 403 and "localhost only" in rebound.json()["error"]["message"]
    same = httpx.post(url, headers={**key, "Origin": server.url}, json={"prompt": "x", "steps": 1})
    assert same.status_code == 200
    assert httpx.get(url, headers={**key, "Host": f"localhost:{server.port}"}).status_code == 200


def test_text_to_video_job_with_progress(server, client, tmp_path):
    seen = []
    video = client.create("a red ball bouncing on grass", size="128x128", steps=100, seed=7)
    assert (video.status, video.progress, video.seed, video.size, video.seconds) == ("queued", 0, 7, "128x128", "1.125")
    done = client.wait(video.id, poll=0.02, timeout=60, on_progress=lambda v: seen.append(v.progress))
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert any(0 < p < 100 for p in seen), seen  # the progress moved while it ran
    assert seen == sorted(seen)
    assert done.created_at <= done.completed_at < done.expires_at and done.extra["object"] == "video"
    frames = read_video(client.download(done.id, tmp_path / "out.mp4"))
    assert frames.shape == (9, 128, 128, 3)
    thumb = read_image(client.download(done.id, tmp_path / "thumb.png", variant="thumbnail"))
    assert thumb.shape == (128, 128, 3)
    assert done.id in [v.id for v in client.list(limit=100)]
    sidecar = json.loads((server.data_dir / "jobs" / done.id / "video.mp4.json").read_text())
    assert sidecar["seed"] == 7 and sidecar["prompt"] == "a red ball bouncing on grass"


def test_every_input_mode_through_uploads(server, client, tmp_path):
    first = client.generate("a ball", output=tmp_path / "a.mp4", seed=1)
    image = np.full((32, 48, 3), 200, np.uint8)
    write_image(tmp_path / "first.png", image)
    cases = {
        "i2v": (dict(image=tmp_path / "first.png"), 9),
        "loop": (dict(mode="loop", image=(tmp_path / "first.png").read_bytes()), 8),
        "extend": (dict(video=tmp_path / "a.mp4", seconds=1, direction="backward"), 9 + 8),
        "connect": (dict(video=[tmp_path / "a.mp4", tmp_path / "a.mp4"]), 9 + 7 + 9),
        "edit": (dict(video=tmp_path / "a.mp4", mode="edit", strength=0.5), 9),
        "t2i": (dict(frames=1), 1),
    }
    jobs = {mode: client.create(f"the ball, {mode}", **kw) for mode, (kw, _) in cases.items()}
    for mode, job in jobs.items():
        done = _wait_done(client, job.id)
        assert (done.status, done.mode, done.frames) == ("completed", mode, cases[mode][1]), done.error
        assert len(read_video(client.download(done.id, tmp_path / f"{mode}.mp4"))) == cases[mode][1]
    # uploads are stored under the server's names, whatever the client called them
    stored = sorted(p.name for p in (server.data_dir / "jobs" / jobs["connect"].id / "inputs").iterdir())
    assert stored == ["video_0.mp4", "video_1.mp4"] and first.status == "completed"


def test_bad_requests_get_the_clis_messages(server, client, model, tmp_path):
    cli_cases = [("--size", "50x50", {"size": "50x50"}), ("--seconds", "1000", {"seconds": 1000})]
    for flag, value, field in cli_cases:
        cli = _cli("generate", "a ball", "--model", str(model), flag, value, "-o", str(tmp_path / "x.mp4"))
        assert cli.returncode == 2
        message = cli.stderr.strip().removeprefix("soraflow: error: ")
        with pytest.raises(ClientError) as refused:
            client.create("a ball", **field)
        assert (refused.value.status, refused.value.message) == (400, message)
    long_prompt = "a red ball " * 1000
    cli = _cli("generate", long_prompt, "--model", str(model), "-o", str(tmp_path / "x.mp4"))
    with pytest.raises(ClientError) as refused:
        client.create(long_prompt)
    assert refused.value.message == cli.stderr.strip().removeprefix("soraflow: error: ")
    assert refused.value.message == "the prompt has 10999 characters; the limit is 4000"  # stripped

    url, headers = f"{server.url}/v1/videos", server.headers
    folders = set((server.data_dir / "jobs").iterdir())
    for body, status, words in [
        ({"prompt": "x", "steps": "many"}, 400, "field 'steps'"), ({"prompt": "x", "colour": "red"}, 400, "unknown field"),
        ({"prompt": "x", "mode": "i2v"}, 400, "needs an image"), ({"steps": 2}, 400, "'prompt' is required"),
        ({"prompt": "x", "model": "sora-2"}, 400, "not served here"),
    ]:
        response = httpx.post(url, headers=headers, json=body)
        assert response.status_code == status and words in response.json()["error"]["message"], response.text
    response = httpx.post(url, headers=headers, content=b'{"prompt": "x"}')  # no content type
    assert response.status_code == 415
    response = httpx.post(url, headers={**headers, "Content-Type": "application/json"}, content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    # uploads: type from the bytes (not the name or content type), size per file, size of a streamed body
    response = httpx.post(url, headers=headers, data={"prompt": "x"},
                          files={"image": ("../../etc/ok.png", b"not an image at all", "image/png")})
    assert response.status_code == 415 and "PNG, JPEG, WebP" in response.json()["error"]["message"]
    fake_mp4 = b"\0\0\0\x18ftypisom" + bytes(int(1.5 * 2**20))
    response = httpx.post(url, headers=headers, data={"prompt": "x"}, files={"video": ("a.mp4", fake_mp4)})
    assert response.status_code == 413 and "over the limit of 1 MiB" in response.json()["error"]["message"]
    response = httpx.post(url, headers=headers, data={"prompt": "x"}, files={"video": ("a.mp4", b"\0\0\0\x18ftypisom")})
    assert response.status_code == 400 and "the video upload" in response.json()["error"]["message"]
    assert str(server.data_dir) not in response.text  # no server path in a message

    def stream():
        yield b"--b\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n\r\n"
        for _ in range(8):
            yield bytes(2**20)

    response = httpx.post(url, headers={**headers, "Content-Type": "multipart/form-data; boundary=b"}, content=stream())
    assert response.status_code == 413 and "request body" in response.json()["error"]["message"]
    assert set((server.data_dir / "jobs").iterdir()) == folders  # refused submissions leave no folder behind


def client_status(client, video_id):
    try:
        return client.retrieve(video_id).status
    except ClientError:
        return None


def test_cancel_and_delete(server, client):
    running = client.create("long", **LONG)
    queued = client.create("waits", steps=1)
    wait_for(lambda: client.retrieve(running.id).progress > 0, 30, "the long job to start")
    assert client.cancel(queued.id).status == "cancelled"  # at once: it never started
    cancelled = client.cancel(running.id)  # stops between two steps
    assert cancelled.status == "cancelled" and 0 < cancelled.progress < 100
    assert not (server.data_dir / "jobs" / running.id / "video.mp4").exists()
    with pytest.raises(ClientError, match="409: video .* is cancelled"):
        client.download(running.id, server.data_dir / "never.mp4")
    with pytest.raises(JobFailed, match="cancelled"):
        client.generate("cancel me", timeout=30, **LONG, on_progress=lambda v: v.progress and client.cancel(v.id))
    # delete: a finished job goes with its files; a running one as soon as its worker lets go
    done = client.generate("to delete")
    client.delete(done.id)
    assert client_status(client, done.id) is None and not (server.data_dir / "jobs" / done.id).exists()
    running = client.create("long, deleted", **LONG)
    wait_for(lambda: client.retrieve(running.id).progress > 0, 30, "the long job to start")
    client.delete(running.id)
    assert client_status(client, running.id) is None
    wait_for(lambda: not (server.data_dir / "jobs" / running.id).exists(), 10, "the deleted job's folder to go")
    assert client.generate("after all that").status == "completed"  # the worker is free again
    with pytest.raises(ClientError, match="404"):
        client.delete(running.id)


def test_generation_error_is_a_failed_job_with_its_message(server, client, tmp_path):
    blocker = client.create("keeps the worker busy", **LONG)
    write_image(tmp_path / "first.png", np.zeros((32, 48, 3), np.uint8))
    doomed = client.create("its image vanishes", image=tmp_path / "first.png")
    for path in (server.data_dir / "jobs" / doomed.id / "inputs").iterdir():
        path.unlink()  # the upload is gone before the worker gets to it
    client.cancel(blocker.id)
    failed = _wait_done(client, doomed.id)
    assert failed.status == "failed" and failed.error["code"] == "generation_error"
    assert "the image upload" in failed.error["message"] and str(server.data_dir) not in failed.error["message"]
    assert client.generate("the next job runs").status == "completed"


def test_list_pages(server, client):
    ids = [client.create(f"page {i}", steps=1).id for i in range(3)]
    first = httpx.get(f"{server.url}/v1/videos", headers=server.headers, params={"limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] and [d["id"] for d in first["data"]] == ids[::-1][:2]
    second = httpx.get(f"{server.url}/v1/videos", headers=server.headers,
                       params={"limit": 2, "after": first["last_id"]}).json()
    assert second["data"][0]["id"] == ids[0]
    for i in ids:
        _wait_done(client, i)


# ---------------------------------------------------------------------------------------------- restarts and limits


def test_kill_9_restart_completes_the_jobs(server, tmp_path):
    """Last in this file: it kills the shared server and restarts it on the same store with a small queue
    and rate limit (run alone, it gets a fresh server)."""
    with Client(server.url, api_key=API_KEY, max_retries=0) as client:
        interrupted = client.create("interrupted", size="128x128", steps=200)
        waiting = client.create("waiting", steps=1)
        wait_for(lambda: client.retrieve(interrupted.id).progress > 0, 30, "the first job to start")
        workers = server.worker_pids()
    server.kill9()
    wait_for(lambda: all(pid_gone(p) for p in workers), 10, "the killed server's worker to exit by itself")

    server.args += ["--max-queue", "2", "--rate-limit", "4", "--max-attempts", "2"]
    server.start()
    with Client(server.url, api_key=API_KEY, max_retries=0) as client:
        again = _wait_done(client, interrupted.id)
        assert (again.status, again.attempts, again.progress) == ("completed", 2, 100)
        assert len(read_video(client.download(again.id, tmp_path / "again.mp4"))) == 9
        assert _wait_done(client, waiting.id).status == "completed"
        # a bounded queue: 2 unfinished jobs, then 429 with Retry-After
        long_jobs = [client.create("fills the queue", **LONG) for _ in range(2)]
        full = httpx.post(f"{server.url}/v1/videos", headers=server.headers, json={"prompt": "one too many"})
        assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
        assert full.json()["error"]["message"].startswith("the queue is full (2 unfinished jobs, limit 2)")
        for job in long_jobs:
            client.cancel(job.id)
        # the per-client rate limit: 4 submissions a minute, good or bad (3 so far), then 429 with Retry-After
        with pytest.raises(ClientError, match="400"):
            client.create("x", size="1x1")
        response = httpx.post(f"{server.url}/v1/videos", headers=server.headers, json={"prompt": "x"})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert "too many submissions" in response.json()["error"]["message"]
