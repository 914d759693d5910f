"""Generation speed of the default model's shapes: a 4 s, 128x128, 8 fps clip from a text prompt.

What is timed is what a user waits for once the weights are loaded: prompt expansion, text encoding,
sampling (every DiT pass, guidance included) and VAE decoding, i.e. ``GenerationResult.timings["total"]``.
Each variant runs in its own process (so its peak memory is its own): one cold run (first-call costs:
oneDNN primitive creation, allocator growth), then ``--repeats`` warm runs; the median is reported
with the per-stage medians, the CPU time the process used per run and the peak resident memory.

The weights are random (the speed does not depend on them): ``--model DIR`` benchmarks a real
model folder instead, at the settings of its config.json.

    python benchmarks/bench_generate.py                                  # the default configuration
    python benchmarks/bench_generate.py --variants default 'small12:dit_layers=12' 'cfg1:cfg=1'
    python benchmarks/bench_generate.py --model soraflow/assets/default --repeats 5
    python benchmarks/bench_generate.py --model soraflow/assets/default --dtypes float32,int8 --rounds 3
    python benchmarks/bench_generate.py --model soraflow/assets/default --variants default 'late:guidance_min_t=0.6' --rounds 3

A variant is ``NAME:field=value,field=value`` over the fields of :class:`Shape` (``NAME`` alone is a
predefined one, see ``VARIANTS``); with ``--model`` a variant changes only the runtime fields
(``RUNTIME_FIELDS``: guidance_min_t, threads, compile, cfg_batch). The machine is shared and noisy, so variants run interleaved in
``--rounds`` rounds and the table shows each variant's ratio to the first; the load average before and
after is printed with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROMPT = "a red ball bouncing on grass"


@dataclass
class Shape:
    """The model shapes and runtime settings of one variant (defaults: the default model)."""

    dit_preset: str = "small"  # DiT preset the fields below override
    dit_layers: int = 8  # transformer blocks (small: 12)
    dit_heads: int = 6  # attention heads (width = heads x head_dim)
    dit_head_dim: int = 64
    dit_ffn: int = 1536  # feed-forward hidden width
    vae_preset: str = "small"
    vae_decoder_dim: int = 0  # decoder base width (0: the encoder's)
    steps: int = 8  # sampler steps
    cfg: float = 4.0  # guidance scale (1: no unconditional pass)
    guidance_min_t: float = -1.0  # steps below this t run unguided (-1: the model's config, 0 with random weights)
    sampler: str = "euler"
    shift: float = 0.0  # timestep shift (0: flow.shift_for the grid)
    dit_dtype: str = "float32"  # float32, bfloat16 (pays only on AMX CPUs) or int8 (dynamic, the blocks' matmuls)
    vae_dtype: str = "bfloat16"  # bfloat16 runs the decoder channels_last_3d (vae.to_fast)
    text_dtype: str = "float32"
    threads: int = 2  # torch CPU threads
    compile: bool = False  # torch.compile the DiT (inductor, frozen weights)
    cfg_batch: bool = False  # conditional + unconditional pass as one batch of 2 (the pipeline does so off the CPU)
    seconds: float = 4.0
    width: int = 128
    height: int = 128
    fps: int = 8
    model_dtype: str = "auto"  # with --model: the dtype given to SoraPipeline.from_pretrained (auto, float32, int8, ...)

    @classmethod
    def parse(cls, text: str) -> tuple[str, "Shape"]:
        name, _, rest = text.partition(":")
        base = VARIANTS.get(name, cls()) if not rest else cls()
        if not rest:
            if name not in VARIANTS:
                raise SystemExit(f"unknown variant {name!r}; predefined: {', '.join(VARIANTS)} (or NAME:field=value,...)")
            return name, base
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {}
        for item in rest.split(","):
            key, _, value = item.partition("=")
            if key not in types:
                raise SystemExit(f"variant {name}: unknown field {key!r}; fields: {', '.join(types)}")
            kind = types[key]
            values[key] = (value.lower() in ("1", "true", "yes")) if kind == "bool" else \
                int(value) if kind == "int" else float(value) if kind == "float" else value
        return name, dataclasses.replace(base, **values)


# The fields a variant may change with --model (the rest are the model's shapes and settings).
RUNTIME_FIELDS = ("guidance_min_t", "threads", "compile", "cfg_batch")

# Predefined variants: the default configuration and the alternatives BENCHMARKS.md compares it with.
VARIANTS = {
    "default": Shape(),
    "small12": Shape(dit_layers=12),  # the full DiT "small" preset
    "steps10": Shape(steps=10),
    "cfg1": Shape(cfg=1.0),
    "vae_fp32": Shape(vae_dtype="float32"),
    "dit_bf16": Shape(dit_dtype="bfloat16"),
    "dit_int8": Shape(dit_dtype="int8"),
    "all_bf16": Shape(dit_dtype="bfloat16", text_dtype="bfloat16"),
    "compiled": Shape(compile=True),
    "threads1": Shape(threads=1),
    "cfg_batch": Shape(cfg_batch=True),
}


# ----------------------------------------------------------------------------------------------
# One variant, in a child process


def build_pipeline(shape: Shape, model: str | None = None):
    """A pipeline with ``shape``'s models (random weights) or the folder ``model``, at its dtypes."""
    import torch

    from soraflow.pipeline import SoraPipeline

    if model:
        from soraflow.pipeline import auto_dtypes, resolve_dtype

        dtype = resolve_dtype(shape.model_dtype)  # "auto" and "int8" stay names
        pipe = SoraPipeline.from_pretrained(model, dtype=dtype)  # "auto": what `soraflow generate` does by default
        vae_auto = auto_dtypes("cpu")[1]
        if isinstance(dtype, torch.dtype) and vae_auto != dtype:  # --dtypes sets the DiT's; the VAE stays auto
            pipe.vae.to_fast(vae_auto)
    else:
        from soraflow.models.dit import DiT, dit_config
        from soraflow.models.text import load_text_encoder
        from soraflow.models.vae import VideoVAE, vae_config
        from soraflow.pipeline import PipelineConfig

        torch.manual_seed(0)
        encoder = load_text_encoder("minilm")
        vae = VideoVAE(vae_config(shape.vae_preset, decoder_base_dim=shape.vae_decoder_dim or None))
        z = vae.config.z_dim
        dit = DiT(dit_config(shape.dit_preset, num_layers=shape.dit_layers, num_attention_heads=shape.dit_heads,
                             attention_head_dim=shape.dit_head_dim, ffn_dim=shape.dit_ffn, in_channels=z,
                             out_channels=z, text_dim=encoder.dim))
        config = PipelineConfig(fps=shape.fps, height=shape.height, width=shape.width, seconds=shape.seconds,
                                latent_channels=z, size_multiple=vae.spatial_factor * dit.config.patch_size[1],
                                steps=shape.steps, guidance_scale=shape.cfg, shift=shape.shift or None,
                                sampler=shape.sampler)
        pipe = SoraPipeline(vae, dit, encoder, config)
    apply_dtypes(pipe, dit=shape.dit_dtype, vae=shape.vae_dtype, text=shape.text_dtype)
    if shape.guidance_min_t >= 0:
        pipe.config.guidance_min_t = shape.guidance_min_t
    if shape.cfg_batch:
        import functools

        from soraflow import flow, pipeline

        pipeline.flow = type(flow)("flow_cfg_batch")  # a module-like namespace: flow with cfg_batch forced on
        pipeline.flow.__dict__.update(flow.__dict__)
        pipeline.flow.sample = functools.partial(_sample_batched, flow.sample)
    if shape.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant weights: inductor pre-packs them for oneDNN
        pipe.dit = torch.compile(pipe.dit, dynamic=False)
        pipe.dit.config = pipe.dit._orig_mod.config
        pipe.dit.proj_out = pipe.dit._orig_mod.proj_out
    return pipe


def _sample_batched(sample, *args, **kwargs):
    kwargs["cfg_batch"] = True
    return sample(*args, **kwargs)


def apply_dtypes(pipe, *, dit: str, vae: str, text: str) -> None:
    """Cast each model ("model": leave it as loaded, i.e. what ``SoraPipeline.from_pretrained`` chose)."""
    import torch

    if "model" in (dit, vae, text):
        return

    pipe.dit.to(dtype=torch.float32 if dit == "int8" else getattr(torch, dit))
    if dit == "int8":
        pipe.dit.quantize_int8()
    pipe.text_encoder.to(dtype=getattr(torch, text))
    if vae == "bfloat16":
        pipe.vae.to_fast(torch.bfloat16)
    else:
        pipe.vae.to(dtype=getattr(torch, vae))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_dit(dit) -> int:
    """Parameters of the DiT's shape (an int8-quantized DiT holds packed weights, not parameters)."""
    import torch

    from soraflow.models.dit import DiT

    with torch.device("meta"):
        return count(DiT(dit.config))


def run_child(shape: Shape, model: str | None, repeats: int, warmup: int) -> dict:
    import psutil
    import torch

    torch.set_num_threads(shape.threads)
    build_start = time.perf_counter()
    pipe = build_pipeline(shape, model)
    build = time.perf_counter() - build_start
    kwargs = {} if model else {"seconds": shape.seconds, "size": (shape.height, shape.width), "fps": shape.fps}
    runs = []
    for i in range(warmup + repeats):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = pipe(PROMPT, seed=i, progress=False, **kwargs)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        runs.append({"wall": wall, "cpu": cpu, **{k: v for k, v in result.timings.items()}})
    proc = psutil.Process()
    peak = getattr(proc.memory_info(), "peak_wset", None)
    if peak is None:  # Linux: ru_maxrss is KiB
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dit_cfg = pipe.dit.config
    return {
        "frames": int(result.frames.shape[0]), "size": list(result.frames.shape[1:3]),
        "settings": result.settings, "build_s": build,
        "dit_params": count_dit(pipe.dit), "vae_params": count(pipe.vae), "decoder_params": count(pipe.vae.decoder),
        "dit": f"{dit_cfg.num_attention_heads * dit_cfg.attention_head_dim}x{dit_cfg.num_layers} ffn {dit_cfg.ffn_dim}",
        "cold": runs[:warmup], "warm": runs[warmup:], "peak_rss": peak,
    }


# ----------------------------------------------------------------------------------------------
# The parent: variants side by side


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    amx = torch.cpu._is_amx_tile_supported() if hasattr(torch.cpu, "_is_amx_tile_supported") else "?"
    return (f"{cpu}, {os.cpu_count()} cores, AMX {'yes' if amx is True else 'no' if amx is False else amx}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _fmt(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds:.2f}"  # NaN: no such runs


def median(runs: list[dict], key: str) -> float:
    values = [r.get(key, 0.0) for r in runs]
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--variants", nargs="+", default=["default"], help="variants (first = the baseline of the ratios)")
    parser.add_argument("--model", default=None, help="benchmark this model folder at its own settings instead")
    parser.add_argument("--dtypes", default="auto",
                        help="with --model: comma list of DiT and text-encoder dtypes to compare (auto, float32, bfloat16, "
                             "int8); the VAE runs at its auto dtype in each [auto]")
    parser.add_argument("--repeats", type=int, default=5, help="warm runs per variant and round (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="cold runs before them, reported separately")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each a fresh process per variant)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child is not None:
        spec = json.loads(args._child)
        out = run_child(Shape(**spec["shape"]), spec["model"], spec["repeats"], spec["warmup"])
        print("RESULT " + json.dumps(out))
        return 0

    if args.model:  # the folder's own settings; one variant per dtype asked for (and per runtime variant)
        kinds = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        variants = []
        for name, shape in (Shape.parse(v) for v in args.variants):
            runtime = {f: getattr(shape, f) for f in RUNTIME_FIELDS}
            if dataclasses.replace(shape, **{f: getattr(Shape(), f) for f in RUNTIME_FIELDS}) != Shape():
                raise SystemExit(f"variant {name}: with --model only {', '.join(RUNTIME_FIELDS)} can change "
                                 "(the shapes are the model's)")
            for d in kinds:
                label = "-".join(["model" if name == "default" else name] + ([d] if kinds != ["auto"] else []))
                variants.append((label, dataclasses.replace(Shape(), dit_dtype="model", vae_dtype="model",
                                                            text_dtype="model", model_dtype=d, **runtime)))
    else:
        variants = [Shape.parse(v) for v in args.variants]
    load_before = os.getloadavg()
    print(f"machine: {machine_line()}; load average before {load_before[0]:.2f}")
    results: dict[str, dict] = {}
    for rnd in range(args.rounds):
        for name, shape in variants:
            spec = {"shape": dataclasses.asdict(shape), "model": args.model, "repeats": args.repeats, "warmup": args.warmup}
            proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"variant {name} failed (exit {proc.returncode})")
            out = json.loads(line[0][len("RESULT "):])
            if name in results:
                results[name]["warm"] += out["warm"]
                results[name]["cold"] += out["cold"]
                results[name]["peak_rss"] = max(results[name]["peak_rss"], out["peak_rss"])
            else:
                results[name] = out
            print(f"  round {rnd + 1} {name}: median {median(out['warm'], 'total'):.2f} s", flush=True)
    load_after = os.getloadavg()

    base = median(results[variants[0][0]]["warm"], "total")
    print(f"\nload average after {load_after[0]:.2f}; {args.repeats * args.rounds} warm runs per variant "
          f"after {args.warmup} cold; '{PROMPT}'")
    first = results[variants[0][0]]
    s = first["settings"]
    print(f"clip: {first['frames']} frames {s['size']} at {s['fps']} fps, {s['steps']} {s['sampler']} steps, "
          f"cfg {s['guidance_scale']}\n")
    header = ("| variant | DiT (params) | VAE dec params | steps x cfg | dtypes DiT/VAE | threads | median s | ratio "
              "| CPU s | text s | denoise s | decode s | cold s | peak RSS MiB |")
    print(header)
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, shape in variants:
        r = results[name]
        warm = r["warm"]
        st = r["settings"]
        dtypes = shape.model_dtype if args.model else f"{shape.dit_dtype[:4]}/{shape.vae_dtype[:4]}" + (" +compile" if shape.compile else "")
        print(f"| {name} | {r['dit']} ({r['dit_params'] / 1e6:.1f} M) | {r['decoder_params'] / 1e6:.1f} M "
              f"| {st['steps']} x {st['guidance_scale']:g} | {dtypes} | {shape.threads} "
              f"| {median(warm, 'total'):.2f} | {median(warm, 'total') / base:.2f} | {median(warm, 'cpu'):.2f} "
              f"| {median(warm, 'encode_text'):.3f} | {median(warm, 'denoise'):.2f} | {median(warm, 'decode'):.2f} "
              f"| {_fmt(median(r['cold'], 'total'))} | {r['peak_rss'] / 2**20:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "load": [load_before, load_after],
                                         "variants": {n: {"shape": dataclasses.asdict(s), **results[n]} for n, s in variants}},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
