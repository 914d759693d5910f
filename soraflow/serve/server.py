"""Running the server: check the settings, open the store, start the workers and uvicorn, stop cleanly."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from ..errors import InputError
from .config import ServeConfig
from .security import is_loopback

log = logging.getLogger("soraflow.serve")


def check_config(config: ServeConfig) -> None:
    """One-line errors for settings that cannot work, before anything starts."""
    if not is_loopback(config.host) and not config.api_key:
        raise InputError(f"binding {config.host} makes the server reachable from the network; give it an API key "
                         f"(--api-key KEY or SORAFLOW_API_KEY), or bind 127.0.0.1")
    if not 0 <= config.port <= 65535:
        raise InputError(f"port must be between 0 and 65535, got {config.port}")
    for name in ("workers", "max_queue", "max_attempts"):
        if getattr(config, name) < 1:
            raise InputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.max_upload_mb <= 0 or config.expire_after <= 0 or config.rate_limit < 0:
        raise InputError("max-upload-mb and expire-after must be positive, rate-limit not negative")
    if config.api_key is not None and len(config.api_key) < 8:
        raise InputError("the API key is shorter than 8 characters; use a long random one "
                         "(python -c 'import secrets; print(secrets.token_urlsafe())')")


def _bind(host: str, port: int) -> socket.socket:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise InputError(f"cannot bind {host}:{port}: {err.strerror}") from None
    # proto must say TCP: asyncio sets TCP_NODELAY only on such sockets, and without it every response
    # (headers, then body) waits out the client's 40 ms delayed ACK
    sock = socket.socket(info[0], info[1], info[2])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
    except OSError as err:
        sock.close()
        raise InputError(f"cannot bind {host}:{port}: {err.strerror}") from None
    return sock


def serve(config: ServeConfig) -> int:
    """Serve until interrupted; returns the exit status (2 when the model does not load in the workers)."""
    check_config(config)  # before the heavy imports: a wrong flag answers at once
    import uvicorn

    from ..default_model import require_default_model
    from ..pipeline import read_config
    from .app import create_app
    from .pool import WorkerPool, default_threads
    from .store import JobStore
    from .worker import WorkerOptions

    sock = _bind(config.host, config.port)  # before the workers start: a busy port is a one-line error
    model_dir = Path(config.model) if config.model is not None else require_default_model()
    pipeline_config = read_config(model_dir)  # a wrong folder fails here, in one line, before any process starts
    model_name = "default" if config.model is None else model_dir.resolve().name
    store = JobStore(config.data_dir)
    options = WorkerOptions(model=str(model_dir), data_dir=str(config.data_dir), device=config.device,
                            dtype=config.dtype, offload=config.offload, threads=config.threads or default_threads(config.workers),
                            max_attempts=config.max_attempts, expire_after=config.expire_after)
    pool = WorkerPool(options, config.workers, store)
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def stop(message: str) -> None:
        fatal.append(message)
        server.should_exit = True

    app = create_app(config, store, pipeline_config, model_name, pool, on_fatal=stop)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    # keep-alive well past clients' own idle expiry (httpx: 5 s): a server closing an idle connection
    # just as a client reuses it fails that request ("server disconnected without sending a response")
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           timeout_keep_alive=75, timeout_graceful_shutdown=5))
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    log.info("soraflow serve: model %s, %d worker%s, jobs in %s", model_dir, config.workers,
             "s" if config.workers > 1 else "", config.data_dir)
    log.info("page %s/  API %s/v1/videos  docs %s/docs%s", url, url, url,
             "  (API key required)" if config.api_key else "")
    server.run(sockets=[sock])
    if fatal:
        raise InputError(fatal[0])
    return 0


__all__ = ["serve", "check_config"]
