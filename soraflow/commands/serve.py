"""`soraflow serve`: the job API, the page and N generation workers over one model (see docs/serve.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..validate import OFFLOAD_HELP, check_offload
from . import positive_int

API_KEY_ENV = "SORAFLOW_API_KEY"

EXAMPLES = f"""\
examples:
  soraflow serve                                        (http://127.0.0.1:8000/, the shipped model)
  soraflow serve --model mymodel --workers 2 --port 8080
  {API_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe())') soraflow serve --host 0.0.0.0
Then open the page, or: curl -s localhost:8000/v1/videos -H 'Content-Type: application/json' \\
  -d '{{"prompt": "a red ball bouncing on grass", "seconds": 2}}'
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a web page and a video job API (OpenAI's videos API shape)",
        description="Serve generation over HTTP: a page to type prompts into, and a job API "
                    "(POST /v1/videos, GET /v1/videos/ID, GET /v1/videos/ID/content). Jobs are kept in a "
                    "SQLite store and survive restarts; N worker processes each load the model once.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (config.json, vae/, dit/); default: the model shipped in the package")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs an API key)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="generation processes, each with the model loaded once (default 1)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"key every request must carry (default: ${API_KEY_ENV}); required off loopback")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="job store and job files (default: ~/.local/share/soraflow/serve)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-queue", type=positive_int, default=100,
                        help="unfinished jobs accepted; past it, 429 with Retry-After (default 100)")
    limits.add_argument("--rate-limit", type=float, default=30.0,
                        help="submissions a minute per client address (default 30; 0: none)")
    limits.add_argument("--max-upload-mb", type=float, default=64.0, help="largest uploaded file (default 64 MiB)")
    limits.add_argument("--expire-after", type=float, default=24.0,
                        help="hours a finished job and its files are kept (default 24)")
    limits.add_argument("--max-attempts", type=positive_int, default=2,
                        help="runs of a job whose worker died (killed, crashed) before it is marked failed")
    run_opts = parser.add_argument_group("running")
    run_opts.add_argument("--device", default="cpu", help="torch device of the workers (cpu, cuda, cuda:1, ...)")
    run_opts.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                          help="model precision (as for generate)")
    run_opts.add_argument("--offload", choices=("model", "sequential"), default=None, help=OFFLOAD_HELP)
    run_opts.add_argument("--threads", type=positive_int, default=None,
                          help="torch threads per worker (default: the cores shared out among the workers)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..serve.config import ServeConfig, default_data_dir
    from ..serve.server import serve

    check_offload(args.offload, args.device)
    config = ServeConfig(
        model=args.model, host=args.host, port=args.port, workers=args.workers, api_key=args.api_key or None,
        data_dir=args.data_dir or default_data_dir(), max_queue=args.max_queue, rate_limit=args.rate_limit,
        expire_after=args.expire_after * 3600.0, max_upload_mb=args.max_upload_mb, max_attempts=args.max_attempts,
        device=args.device, dtype=args.dtype, threads=args.threads, offload=args.offload,
    )
    return serve(config)
