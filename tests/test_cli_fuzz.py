"""Bad input on every subcommand: hundreds of invocations, each with one thing wrong.

Every one must exit 2 with one line on stderr, no traceback, and no file left behind; the whole run
happens in one child process under an address-space limit, so a memory bomb that slips past the
estimates fails the test instead of the machine. Runs in-process (``soraflow.cli.main``) inside that
child, so the table costs seconds, not a Python start-up per case.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

MEMORY_LIMIT = 12 * 2**30  # address space of the child: torch alone reserves a few GiB of it
MIN_CASES = 300
CASE_SECONDS = 20


def _fixtures(tmp: Path) -> dict:
    """A tiny random model, a tiny SoraWorld dataset and its latent cache, and broken variants."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_random_model import make_random_pipeline

    from soraflow.data import build_latent_cache
    from soraflow.models.dit import DiT, dit_config
    from soraflow.train.dcp import save_dcp_checkpoint
    from soraflow.video import write_image
    from soraflow.world.dataset import DatasetConfig, write_dataset

    f = {"tmp": tmp, "out": tmp / "out", "cwd": tmp / "cwd"}
    f["out"].mkdir()
    f["cwd"].mkdir()
    model = tmp / "model"
    make_random_pipeline().save_pretrained(model)
    f["model"], f["vae"] = model, model / "vae"
    write_dataset(tmp / "world", DatasetConfig(n=3, sizes=[(64, 64)], seconds=(0.5, 1.0), fps=8, image_fraction=0),
                  workers=1, progress=False)
    f["world"] = tmp / "world"
    f["clip"] = next((tmp / "world" / "clips").glob("*.mp4"))
    build_latent_cache(tmp / "world", model / "vae", tmp / "cache", progress=False)
    f["cache"] = tmp / "cache"
    f["png"] = write_image(tmp / "img.png", np.zeros((32, 48, 3), np.uint8))
    f["text"] = tmp / "notes.txt"
    f["text"].write_text("not a video\n")
    f["afile"] = tmp / "afile"
    f["afile"].write_text("x")
    f["empty"] = tmp / "empty"
    f["empty"].mkdir()
    # A PNG header that claims 30000 x 30000 pixels: a decompression bomb.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    f["bomb"] = tmp / "bomb.png"
    f["bomb"].write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                          + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))

    def broken_model(name, edit):
        import shutil

        folder = tmp / name
        shutil.copytree(model, folder)
        edit(folder)
        return folder

    f["null_config"] = broken_model("m_null", lambda d: (d / "config.json").write_text("null"))
    f["null_vae_config"] = broken_model("m_nullvae", lambda d: (d / "vae" / "config.json").write_text("null"))
    f["bad_json"] = broken_model("m_badjson", lambda d: (d / "config.json").write_text("{oops"))

    def openai(d):
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "expander": "openai"}))

    f["openai_model"] = broken_model("m_openai", openai)

    def nan_weights(d):
        weights = next((d / "dit").glob("*.safetensors"))
        from safetensors.torch import load_file

        state = load_file(weights)
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[key] = torch.full_like(state[key], float("nan"))
        save_file(state, str(weights))

    f["nan_model"] = broken_model("m_nan", nan_weights)

    def deep(d):
        cfg = json.loads((d / "dit" / "config.json").read_text())
        (d / "dit" / "config.json").write_text(json.dumps({**cfg, "num_layers": 100000}))

    f["deep_model"] = broken_model("m_deep", deep)
    (tmp / "sidecar_dir.mp4.json").mkdir()
    f["sidecar_dir"] = tmp / "sidecar_dir.mp4"
    # A training run whose sharded checkpoint carries a pickle, and one with a corrupt extra.json.
    dit = DiT(dit_config("tiny"))
    for name in ("run_pickle", "run_extra"):
        save_dcp_checkpoint(tmp / name, 1, modules={"ema": dit}, extra={"model_config": dit.config.to_dict()})
    (tmp / "run_pickle" / "checkpoints" / "step_00000001" / "state" / ".metadata").write_bytes(b"\x80\x04K\x01.")
    (tmp / "run_extra" / "checkpoints" / "step_00000001" / "extra.json").write_text("{torn")
    f["run_pickle"], f["run_extra"] = tmp / "run_pickle", tmp / "run_extra"
    for name, text in (("cfg_null.json", "null"), ("cfg_bad.json", "{oops"), ("cfg_layers.json", '{"num_layers": 100000}')):
        (tmp / name).write_text(text)
    return f


def _mutate(base: list[str], flag: str, value) -> list[str]:
    """``base`` with ``flag``'s value replaced (or the flag added); value None drops the flag."""
    argv, out, i = list(base), [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    if value is None:
        return out
    return out + ([flag] if value is True else [flag, *([value] if isinstance(value, str) else value)])


def cases(f: dict) -> list[list[str]]:
    """The bad invocations: each base command is valid; each case breaks one thing."""
    s = lambda p: str(p)  # noqa: E731
    long_name = "a" * 300 + ".mp4"
    numbers = ["nan", "inf", "-inf", "abc", ""]
    bad_out = ["/proc/soraflow-x.mp4", "/sys/soraflow-x.mp4", s(f["tmp"] / "nodir" / "x.mp4"), "x.txt",
               s(f["out"] / long_name), s(f["empty"]), s(f["sidecar_dir"])]
    devices = ["meta", "cuda", "cuda:7", "foo", "xla", "mps", ""]
    prompts = ["", "   ", "\x1b[2J", "a\x00ball", "\udcff ball", "x" * 5000, "ball\x7f", "\x9b31m"]
    out = []

    g = ["generate", "a red ball", "-o", s(f["out"] / "g.mp4"), "--model", s(f["model"]), "--steps", "1",
         "--frames", "5", "-q"]
    out += [["generate", p, *g[2:]] for p in prompts]
    out += [_mutate(g, "--negative", v) for v in ("\x1b[2J", "\udcfe", "y" * 5000)]
    out += [_mutate(_mutate(g, "--frames", None), "--seconds", v) for v in numbers + ["1e308", "-1", "0", "999999"]]
    out += [_mutate(g, "--frames", v) for v in ("0", "-5", "1.5", str(10**8), "abc")]
    out += [_mutate(g, "--fps", v) for v in ("0", "-1", "nan", "1000", "abc", "8.5")]
    out += [_mutate(g, "--steps", v) for v in ("0", "-1", "1001", "abc", "1e3")]
    out += [_mutate(g, "--cfg", v) for v in numbers + ["-1", "51"]]
    out += [_mutate(g, "--shift", v) for v in numbers + ["0", "-1", "101"]]
    out += [_mutate(g, "--seed", v) for v in ("-1", str(2**64), "nan", "abc", "1.5", "")]
    out += [_mutate(g, "--size", v) for v in ("0x0", "99999x99999", "17x17", "axb", "32", "-32x32", "32x-32", "x", "")]
    out += [_mutate(g, "--strength", "0.5"), _mutate(g, "--direction", "backward"), _mutate(g, "--loop", True) + ["--extend", s(f["clip"])]]
    out += [_mutate(g, "--image", s(v)) for v in (f["tmp"] / "missing.png", f["empty"], f["bomb"], f["text"], f["model"])]
    out += [_mutate(g, "--extend", s(v)) for v in (f["tmp"] / "missing.mp4", f["text"], f["empty"])]
    out += [_mutate(_mutate(g, "--frames", None), "--edit", s(f["clip"])) + ["--strength", v] for v in ("nan", "0", "2", "-1", "abc")]
    out += [_mutate(g, "--connect", [s(f["clip"]), s(f["tmp"] / "missing.mp4")]), _mutate(g, "--connect", [s(f["text"]), s(f["clip"])])]
    out += [_mutate(g, "-o", v) for v in bad_out]
    out += [_mutate(g, "--device", v) for v in devices]
    out += [_mutate(g, "--dtype", v) for v in ("foo", "float64", "")]
    out += [_mutate(g, "--sampler", "foo"), _mutate(g, "--expander", "foo"), _mutate(g, "--expander", "openai") + ["--expander-url", "ftp://x"]]
    out += [_mutate(g, "--model", s(v)) for v in (f["tmp"] / "missing", f["afile"], f["empty"], f["null_config"],
                                                   f["null_vae_config"], f["bad_json"], f["openai_model"], f["nan_model"],
                                                   f["deep_model"])]
    out += [["generate"], ["generate", "a", "--bogus"], ["generate", "a", "--frames"]]

    w = ["world", "sample", "a red ball", "-o", s(f["out"] / "w.mp4"), "--frames", "3", "--size", "64x64"]
    out += [["world", "sample", p, *w[3:]] for p in prompts[2:5]]
    out += [_mutate(w, "--fps", v) for v in numbers + ["0", "1000", "3"]]
    out += [_mutate(_mutate(w, "--frames", None), "--seconds", v) for v in numbers + ["1e308", "0", "-1", "61"]]
    out += [_mutate(w, "--frames", v) for v in ("0", "-1", "abc", str(10**9))]
    out += [_mutate(w, "--size", v) for v in ("0x0", "33x33", "99999x99999", "axb")]
    out += [_mutate(w, "-o", v) for v in bad_out[:5] + [s(f["out"] / "w.png")]]
    out += [_mutate(w, "--truth", v) for v in ("/proc/soraflow-t.json", s(f["empty"]), s(f["tmp"] / "nodir" / "t.json"))]
    out += [_mutate(w, "--lossless", True) + ["-o", s(f["out"] / "w.gif")]]

    d = ["world", "dataset", "--n", "2", "--out", s(f["out"] / "ds"), "--sizes", "64x64", "--seconds", "0.5",
         "--no-progress", "--workers", "1"]
    out += [_mutate(d, "--n", v) for v in ("0", "-1", "1e30", "abc", str(10**8), "")]
    out += [_mutate(d, "--fps", v) for v in numbers + ["0", "1000"]]
    out += [_mutate(d, "--seconds", v) for v in ("nan", "inf", "0-1", "2-1", "abc", "1e308", "-1", "0", "nan-1")]
    out += [_mutate(d, "--sizes", v) for v in ("0x0", "abc", "", "33x33", "99999x99999", ",")]
    out += [_mutate(d, "--image-fraction", v) for v in ("nan", "2", "-1", "inf", "abc")]
    out += [_mutate(d, "--workers", v) for v in ("0", "abc", "-2")]
    out += [_mutate(d, "--out", v) for v in (s(f["afile"]), "/proc/soraflow-ds", "/sys/soraflow-ds")]

    v = ["train", "vae", "--data", s(f["world"]), "--run-dir", s(f["out"] / "rv"), "--steps", "1", "--batch-size", "1",
         "--size", "32", "--crop", "0", "--frames", "1", "--threads", "1"]
    for flag, values in {
        "--lr": numbers + ["0", "-1"], "--batch-size": ["0", "100000", "abc", "-1"], "--steps": ["0", "-1", "abc"],
        "--frames": ["0", "2", "abc"], "--size": ["0", "abc", "-8"], "--crop": ["-1", "abc"],
        "--image-prob": ["2", "nan", "-0.5"], "--device": devices[:5], "--run-dir": [s(f["afile"]), "/proc/soraflow-rv"],
        "--data": [s(f["tmp"] / "missing"), s(f["afile"]), s(f["empty"])], "--preset": ["foo", "wan-14b"],
        "--base-dim": ["-1", "abc"], "--temporal-factor": ["3", "abc"], "--init": [s(f["tmp"] / "missing"), s(f["null_vae_config"] / "vae")],
        "--kl-weight": ["inf", "nan", "-1"], "--precision": ["foo", "fp16"], "--threads": ["0", "abc"],
        "--warmup-steps": ["-1"], "--grad-clip": ["inf", "-1"], "--object-weight": ["nan"], "--cache-mb": ["-1"],
    }.items():
        out += [_mutate(v, flag, x) for x in values]

    t = ["train", "dit", "--data", s(f["cache"]), "--out", s(f["out"] / "rd"), "--steps", "1", "--preset", "tiny",
         "--quiet", "--threads", "1"]
    for flag, values in {
        "--lr": numbers + ["0", "-1"], "--num-layers": ["0", "100000", "abc", "-1"], "--ffn-dim": ["0", str(10**12), "abc"],
        "--preset": ["wan-14b", "foo", ""], "--steps": ["0", "-1"], "--batch-tokens": ["0", "abc"],
        "--device": devices[:5], "--out": [s(f["afile"]), "/proc/soraflow-rd"],
        "--data": [s(f["tmp"] / "missing"), s(f["afile"]), s(f["world"]), s(f["empty"])],
        "--config": [s(f["tmp"] / "missing.json"), s(f["tmp"] / "cfg_null.json"), s(f["tmp"] / "cfg_bad.json"),
                     s(f["tmp"] / "cfg_layers.json")],
        "--ema-decay": ["2", "nan", "-1"], "--terminal-prob": ["nan", "2"], "--timestep-shift": ["0", "inf", "nan"],
        "--init": [s(f["tmp"] / "missing"), s(f["null_config"])], "--parallel-sequence": ["0", "abc"],
        "--num-attention-heads": ["0", "abc"], "--attention-head-dim": ["0", "7"], "--precision": ["foo"],
        "--beta1": ["1", "nan"], "--caption-dropout": ["2", "inf"],
    }.items():
        out += [_mutate(t, flag, x) for x in values]

    c = ["train", "cache-latents", "--data", s(f["world"]), "--vae", s(f["vae"]), "--out", s(f["out"] / "c2"), "--threads", "1"]
    for flag, values in {
        "--fps": ["0", "nan", "inf", "-1", "abc", "1000"], "--size": ["0x0", "99999x99999", "17x17", "abc"],
        "--max-frames": ["0", "abc", "-3"], "--shard-size": ["0", "abc"], "--out": [s(f["afile"]), "/proc/soraflow-c"],
        "--vae": [s(f["tmp"] / "missing"), s(f["null_vae_config"] / "vae"), s(f["afile"])],
        "--data": [s(f["tmp"] / "missing"), s(f["empty"])], "--dtype": ["foo"], "--limit": ["0", "-1"],
        "--threads": ["0"], "--text-encoder": [s(f["tmp"] / "missing-encoder")],
    }.items():
        out += [_mutate(c, flag, x) for x in values]

    x = ["train", "export-dit", s(f["run_pickle"]), "-o", s(f["out"] / "x")]
    out += [x, ["train", "export-dit", s(f["run_extra"]), "-o", s(f["out"] / "x")]]
    out += [["train", "export-dit", s(p), "-o", s(f["out"] / "x")] for p in (f["tmp"] / "missing", f["afile"], f["empty"])]
    out += [["train", "export-dit", s(f["run_extra"]), "-o", v] for v in ("/proc/soraflow-x", s(f["afile"]))]

    e = ["eval", "vae", "--model", s(f["vae"]), "--data", s(f["world"]), "--frames", "1", "--threads", "1", "--no-progress"]
    for flag, values in {
        "--model": [s(f["tmp"] / "missing"), s(f["null_vae_config"] / "vae"), s(f["afile"])], "--size": ["0", "abc", "-1"],
        "--frames": ["0", "abc"], "--limit": ["0", "abc"], "--json": ["/proc/soraflow-e.json", s(f["empty"])],
        "--data": [s(f["tmp"] / "missing"), s(f["empty"])], "--precision": ["foo"], "--max-side": ["0", "abc"],
    }.items():
        out += [_mutate(e, flag, x) for x in values]

    b = ["eval", "bench", "--model", s(f["model"]), "--limit", "1", "--out", s(f["out"] / "b"), "--reference", "none",
         "--no-progress"]
    for flag, values in {
        "--cfg": numbers + ["-1", "100"], "--steps": ["0", "abc"], "--limit": ["0", "abc"], "--suite": ["foo"],
        "--category": ["foo"], "--out": [s(f["afile"]), "/proc/soraflow-b"], "--reference": ["foo"],
        "--model": [s(f["tmp"] / "missing"), s(f["null_config"]), s(f["nan_model"])], "--device": devices[:5],
        "--dtype": ["foo"],
    }.items():
        out += [_mutate(b, flag, x) for x in values]
    out += [["eval", "bench", "--reference", "none", "--out", s(f["out"] / "b")]]

    pr = ["data", "prepare", s(f["world"] / "clips"), s(f["out"] / "pr"), "--no-progress"]
    for flag, values in {
        "--fps": numbers + ["0", "61"], "--max-seconds": ["0", "-1", "nan"], "--min-seconds": ["0", "-1", "100"],
        "--area": ["0x0", "8x8", "abc"], "--buckets": ["abc", "17x16", "0x0"], "--detector": ["foo"],
        "--caption-url": ["ftp://x", "localhost"], "--cut-threshold": ["nan", "abc"],
    }.items():
        out += [_mutate(pr, flag, x) for x in values]
    out += [pr + ["--recaption"], ["data", "prepare", s(f["tmp"] / "missing"), s(f["out"] / "pr")],
            ["data", "prepare", s(f["world"]), s(f["world"] / "inside")], ["data", "prepare", s(f["empty"]), s(f["out"] / "pr")],
            ["data", "prepare", s(f["world"] / "clips"), "/proc/soraflow-pr"], ["data", "prepare"]]
    lm = ["lora", "merge", s(f["model"])]
    out += [lm + [s(f["tmp"] / "missing.safetensors"), "-o", s(f["out"] / "lm")], lm + [s(f["text"]), "-o", s(f["out"] / "lm")],
            lm + [s(f["afile"]), "-o", s(f["out"] / "lm")], ["lora", "merge", s(f["tmp"] / "missing"), s(f["text"]), "-o", s(f["out"] / "lm")],
            lm + [s(f["text"]), "-o", s(f["model"])], ["lora", "merge", s(f["model"])]]
    out += [_mutate(g, "--lora", v) for v in (s(f["tmp"] / "missing.safetensors"), s(f["text"]), s(f["afile"]), s(f["empty"]))]
    out += [_mutate(t, "--lora", v) for v in ("-1", "abc")] + [_mutate(t, "--lora", "4")]  # the last: no --init
    out += [_mutate(t, "--lora-alpha", v) for v in ("0", "nan")] + [_mutate(_mutate(t, "--lora", "4"), "--init", s(f["null_config"]))]
    out += [_mutate(v, "--spatial-factor", x) for x in ("3", "16", "abc")] + [_mutate(v, "--z-dim", "-1"), _mutate(v, "--motion-weight", "nan")]
    out += [["bogus"], ["train", "bogus"], ["world", "sample"], ["eval", "vae"], ["train", "dit"], ["--bogus"]]
    return out


def _files(f: dict) -> set[str]:
    roots = (f["out"], f["cwd"], f["empty"], f["world"], f["cache"], f["tmp"])
    seen = set()
    for root in roots:
        for p in root.rglob("*"):
            if "captions" in p.parts or p.name == ".lock":  # the caption cache and the dataset lock are shared state
                continue
            seen.add(str(p))
    return seen


def run_all(tmp: Path) -> dict:
    """Every case in this process; a report of each one that misbehaved."""
    import contextlib
    import io
    import signal
    import time

    import torch

    from soraflow.cli import main

    torch.set_num_threads(1)
    f = _fixtures(tmp)
    os.chdir(f["cwd"])
    table = cases(f)
    bad = []
    before = _files(f)

    class TooSlow(BaseException):
        pass

    def alarm(signum, frame):
        raise TooSlow

    signal.signal(signal.SIGALRM, alarm)
    for argv in table:
        err, out = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        signal.alarm(CASE_SECONDS)  # bad input is refused before any real work: one that runs on is a defect
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except SystemExit as stop:  # argparse --help paths only; anything else is a defect
            code = stop.code
        except TooSlow:
            code = f"still running after {CASE_SECONDS} s"
        except BaseException as exc:  # noqa: BLE001  (a traceback is exactly what this test hunts)
            code = f"raised {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        if os.environ.get("SORAFLOW_FUZZ_VERBOSE"):
            print(f"{time.perf_counter() - start:6.2f}s {code} {' '.join(argv)[:120]}", file=sys.__stderr__, flush=True)
        lines = [line for line in err.getvalue().splitlines() if line.strip() and "warning" not in line.lower()]
        after = _files(f)
        left = sorted(after - before)
        before = after
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        if "Traceback" in err.getvalue():
            problems.append("traceback")
        if left:
            problems.append(f"left {left[:3]}")
        if problems:
            bad.append({"argv": [a[:80] for a in argv], "problems": problems, "stderr": err.getvalue()[-300:]})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"cases": len(table), "bad": bad, "peak_rss": peak}


@pytest.mark.slow
def test_hundreds_of_bad_invocations_exit_2_with_one_line_and_leave_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    report = tmp_path / "report.json"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    proc = subprocess.run([sys.executable, __file__, str(tmp_path / "work"), str(report)], env=env,
                          capture_output=True, text=True, preexec_fn=limit, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["cases"] >= MIN_CASES
    assert not result["bad"], json.dumps(result["bad"][:15], indent=1)
    assert result["peak_rss"] < 4 * 2**30  # nothing was allocated on the strength of a bad number


if __name__ == "__main__":
    work, report = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True)
    report.write_text(json.dumps(run_all(work)))
