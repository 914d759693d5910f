"""Rectified flow: the probability path, the loss, timestep sampling and shift, caption dropout and samplers.

Everything here is independent of the network: samplers take any callable ``model_fn(x, t, **cond)``
that returns a velocity, so the math tests against closed-form answers without a model.

Conventions (see docs/flow.md):

- Flow time ``t`` in [0, 1]: t = 0 is clean data, t = 1 is pure noise.
- Path ``x_t = (1 - t) x0 + t * noise``; the network predicts the velocity ``dx_t/dt = noise - x0``.
- ``t`` is per sample ``(B,)``, per latent frame ``(B, T)`` for latents ``(B, C, T, H, W)``, or the
  full shape of ``x``. A latent frame that is *given* (image-to-video, extension, connecting clips)
  has t = 0 and is held exactly fixed by the samplers.
- Timestep shift ``t' = s t / (1 + (s - 1) t)`` (SD3, Wan): s > 1 spends more time at high noise,
  which large grids need because more tokens carry more redundant signal at a given noise level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from .errors import InputError

ModelFn = Callable[..., Tensor]  # model_fn(x, t, **cond) -> velocity, same shape as x
Callback = Callable[[int, float, Tensor], Any]  # callback(step, t, x) after each step


# ----------------------------------------------------------------------------------------------
# The path and the loss
# ----------------------------------------------------------------------------------------------


@dataclass
class PathSample:
    """One draw from the rectified-flow path: what a training step feeds the network and regresses to."""

    xt: Tensor  # noisy input (1 - t) x0 + t * noise, same shape as x0
    t: Tensor  # the timesteps as given: (B,), (B, T) per latent frame, or x0's shape
    noise: Tensor  # the Gaussian endpoint, same shape as x0
    target: Tensor  # the velocity to regress: noise - x0


def expand_t(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast timesteps to ``x``: (B,) per sample, (B, T) per latent frame of a (B, C, T, H, W) x,
    or x's full shape. A Python float applies to every sample."""
    if not torch.is_tensor(t):
        return torch.full((x.shape[0],) + (1,) * (x.ndim - 1), float(t), device=x.device, dtype=x.dtype)
    t = t.to(device=x.device)
    if t.shape == x.shape:
        return t
    if t.ndim == 0:
        return t.reshape((1,) * x.ndim)
    if t.ndim == 1 and t.shape[0] == x.shape[0]:
        return t.reshape((-1,) + (1,) * (x.ndim - 1))  # (B, 1, ..., 1)
    if t.ndim == 2 and x.ndim == 5 and t.shape == (x.shape[0], x.shape[2]):
        return t[:, None, :, None, None]  # (B, 1, T, 1, 1)
    raise InputError(
        f"timesteps of shape {tuple(t.shape)} do not fit data of shape {tuple(x.shape)}: "
        "expected (B,), (B, T) for (B, C, T, H, W) latents, or the data's shape"
    )


def sample_path(
    x0: Tensor, t: Tensor | float, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> PathSample:
    """Draw ``x_t = (1 - t) x0 + t * noise`` and the velocity target ``noise - x0``.

    ``noise`` defaults to a standard normal draw from ``generator`` (on x0's device and dtype).
    """
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise InputError(f"noise shape {tuple(noise.shape)} differs from data shape {tuple(x0.shape)}")
    if not torch.is_tensor(t):
        t = torch.full((x0.shape[0],), float(t), device=x0.device, dtype=x0.dtype)
    te = expand_t(t, x0).to(x0.dtype)
    xt = (1 - te) * x0 + te * noise
    return PathSample(xt=xt, t=t, noise=noise, target=noise - x0)


def flow_loss(pred: Tensor, target: Tensor, frame_mask: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
    """Mean squared velocity error, in float32.

    ``frame_mask`` (B, T) bool marks the latent frames that are *generated* (True = counts) for
    (B, C, T, H, W) tensors; given frames (conditioning, t = 0) are excluded so the model is not
    rewarded for copying its input. The mean is over the counted elements only, so the loss scale does
    not depend on how many frames were given. A batch with no counted frame gives 0 (with a gradient).

    ``weight`` (broadcastable to (B, 1, T, H, W), non-negative) weights the positions: the loss is then
    the weighted mean over the counted elements, so a constant weight gives the plain loss.
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    err = (pred.float() - target.float()).square()
    if frame_mask is None and weight is None:
        return err.mean()
    if pred.ndim != 5:
        raise InputError(f"frame_mask and weight need (B, C, T, H, W) tensors, got {tuple(pred.shape)}")
    b, c, t, h, w = pred.shape
    m = err.new_ones((b, 1, t, 1, 1))
    if frame_mask is not None:
        if frame_mask.shape != (b, t):
            raise InputError(f"frame_mask of shape {tuple(frame_mask.shape)} does not fit (B, C, T, H, W) = {tuple(pred.shape)}")
        m = frame_mask.to(device=err.device, dtype=err.dtype)[:, None, :, None, None]  # (B, 1, T, 1, 1)
    if weight is not None:
        if weight.ndim != 5 or weight.shape[1] != 1:
            raise InputError(f"weight of shape {tuple(weight.shape)} is not (B, 1, T, H, W)")
        m = m * weight.to(device=err.device, dtype=err.dtype)
    m = m.expand(b, 1, t, h, w)
    return (err * m).sum() / (c * m.sum()).clamp_min(1e-12)  # nothing counted: 0, with a gradient


# ----------------------------------------------------------------------------------------------
# Timesteps: shift, logit-normal sampling, the sampling schedule
# ----------------------------------------------------------------------------------------------


def shift_time(t: Tensor | float, shift: float) -> Tensor | float:
    """``t' = s t / (1 + (s - 1) t)``: fixes 0 and 1, monotone, s > 1 moves every t towards noise.

    Equivalent to adding ``log s`` to ``logit(t)``: ``t'/(1 - t') = s * t/(1 - t)``.
    """
    if shift <= 0:
        raise InputError(f"shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def unshift_time(t: Tensor | float, shift: float) -> Tensor | float:
    """Inverse of :func:`shift_time`: ``u = t / (s - (s - 1) t)``."""
    if shift <= 0:
        raise InputError(f"shift must be positive, got {shift}")
    return t / (shift - (shift - 1) * t)


def latent_tokens(latent_shape: Sequence[int], patch_size: Sequence[int] = (1, 2, 2)) -> int:
    """Number of DiT tokens for a latent grid (T, H, W) cut into ``patch_size`` patches."""
    if len(latent_shape) != 3 or len(patch_size) != 3:
        raise InputError(f"latent_shape and patch_size are (T, H, W), got {latent_shape} and {patch_size}")
    return math.prod(math.ceil(n / p) for n, p in zip(latent_shape, patch_size))


def shift_for(
    num_tokens: int,
    *,
    base_tokens: int = 256,
    max_tokens: int = 32760,
    base_shift: float = 1.0,
    max_shift: float = 5.0,
) -> float:
    """The timestep shift for a grid of ``num_tokens`` tokens (resolution- and length-dependent).

    ``log s`` is interpolated linearly in ``log num_tokens`` between ``(base_tokens, base_shift)``
    and ``(max_tokens, max_shift)`` and clamped outside that range:

        s(N) = base_shift * (max_shift / base_shift) ** clamp(log(N / base_tokens) / log(max_tokens / base_tokens), 0, 1)

    Why this shape: SD3's argument (Esser et al. 2024, sec. 5.3.2) is that a grid with N times more
    tokens keeps the same per-patch signal-to-noise ratio under a shift of about sqrt(N) -- a power
    law, i.e. a straight line in log-log. The defaults anchor the line at the tiny world model's grid
    (16 frames of 128x128 -> 4x16x16 latents -> 256 tokens, s = 1) and at Wan2.1's 480p grid
    (81 frames of 832x480 -> 21x60x104 latents -> 32760 tokens, s = 5.0, Wan's default shift), which
    gives an exponent of about 1/3; clamping keeps tiny grids unshifted and huge grids from
    collapsing all steps into the noise end.
    """
    if num_tokens <= 0:
        raise InputError(f"num_tokens must be positive, got {num_tokens}")
    if not (0 < base_tokens < max_tokens):
        raise InputError(f"need 0 < base_tokens < max_tokens, got {base_tokens} and {max_tokens}")
    if base_shift <= 0 or max_shift <= 0:
        raise InputError(f"shifts must be positive, got {base_shift} and {max_shift}")
    frac = math.log(num_tokens / base_tokens) / math.log(max_tokens / base_tokens)
    frac = min(max(frac, 0.0), 1.0)
    return base_shift * (max_shift / base_shift) ** frac


def sample_timesteps(
    n: int,
    *,
    shift: float = 1.0,
    mean: float = 0.0,
    std: float = 1.0,
    terminal: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training timesteps ``(n,)`` in (0, 1): logit-normal (SD3) then shifted; a ``terminal`` fraction at 1.

    ``t = shift_time(sigmoid(mean + std * z), shift)`` with ``z ~ N(0, 1)``; equivalently
    ``logit(t) ~ N(mean + log(shift), std^2)``. The median is ``shift_time(sigmoid(mean), shift)``.
    Logit-normal puts most samples at intermediate t, where the velocity is hardest to predict.

    ``terminal``: each sample is at t = 1 (pure noise) with this probability. Sampling starts there,
    and there only the condition can tell the model what the clip looks like; but a small latent gives
    its colours away to the model at almost any t < 1, so without these samples a model can learn to
    ignore the prompt (docs/default_model.md). A different loss weighting, not a different optimum.
    ``terminal=0`` draws no extra random numbers, so runs started without it resume exactly.
    """
    if n <= 0:
        raise InputError(f"number of timesteps must be positive, got {n}")
    if std <= 0:
        raise InputError(f"logit-normal std must be positive, got {std}")
    if generator is not None and device is None:
        device = generator.device
    if not 0 <= terminal <= 1:
        raise InputError(f"terminal fraction must be in [0, 1], got {terminal}")
    z = torch.randn((n,), generator=generator, device=device, dtype=torch.float32)
    t = shift_time(torch.sigmoid(mean + std * z), shift)
    if terminal > 0:
        at_one = torch.rand((n,), generator=generator, device=device) < terminal
        t = torch.where(at_one, torch.ones_like(t), t)
    return t


def timestep_schedule(steps: int, *, shift: float = 1.0, t_start: float = 1.0) -> Tensor:
    """The sampler's times ``(steps + 1,)`` from ``t_start`` down to exactly 0, shifted.

    Uniform in the unshifted time ``u`` from ``unshift(t_start)`` to 0, mapped through the shift, so
    the first value is exactly ``t_start`` (SDEdit strength) and all ``steps`` steps are used.
    """
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if not (0.0 < t_start <= 1.0):
        raise InputError(f"start time (strength) must be in (0, 1], got {t_start}")
    u0 = unshift_time(t_start, shift)
    u = torch.linspace(u0, 0.0, steps + 1, dtype=torch.float64)
    t = shift_time(u, shift)
    t[0], t[-1] = t_start, 0.0  # exact endpoints, whatever the rounding
    return t


def flow_match_euler_schedule(steps: int, *, shift: float = 1.0, train_steps: int = 1000) -> Tensor:
    """diffusers' ``FlowMatchEulerDiscreteScheduler`` times (``steps + 1``, ending at 0), for weights
    trained and tuned with it (Wan): the shift is applied once to the training grid (which sets the
    range) and once more to the times spaced over it, in float32 as diffusers computes them."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")

    def shifted(s):
        return shift * s / (1 + (shift - 1) * s)

    grid = shifted(torch.arange(train_steps, 0, -1, dtype=torch.float32) / train_steps)
    t = torch.linspace(float(grid[0]) * train_steps, float(grid[-1]) * train_steps, steps, dtype=torch.float64)
    sigmas = shifted(torch.from_numpy((t / train_steps).numpy().astype("float32")))
    return torch.cat([sigmas, torch.zeros(1)]).double()


def unipc_schedule(steps: int, *, shift: float = 1.0, train_steps: int = 1000) -> tuple[Tensor, Tensor]:
    """(times, model times) of diffusers' ``UniPCMultistepScheduler`` with flow sigmas (Wan's solver):
    ``steps`` shifted times from just under 1 (log 0 must not appear) and a final 0; the network is
    evaluated at the integer training step each time truncates to, as diffusers passes it."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    import numpy as np

    s = np.linspace(1, 1 / train_steps, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    if abs(s[0] - 1) < 1e-6:
        s[0] -= 1e-6
    model = np.floor(s * train_steps) / train_steps  # int64 timesteps in diffusers
    times = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32)).double()
    return times, torch.from_numpy(np.concatenate([model, [0.0]]))


class _UniPC:
    """UniPC (Zhao et al. 2023) as diffusers runs it for flow models: data prediction x0 = x - t v,
    the bh2 variant, order 2 with a first-order start and end, a corrector after every step."""

    def __init__(self, times: Tensor):
        self.t = times.float()  # diffusers keeps its sigmas in float32
        self.n = len(times) - 1
        self.outputs: list[Tensor | None] = [None, None]
        self.last: Tensor | None = None
        self.order, self.warm = 1, 0

    def _lambda(self, k: int) -> Tensor:  # log(alpha / sigma) with alpha = 1 - t
        return torch.log(1 - self.t[k]) - torch.log(self.t[k])

    def _first_order(self, k_from: int, k_to: int, x: Tensor, m0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(the first-order step from time k_from to k_to, h = lambda_to - lambda_from, alpha at k_to)."""
        h = self._lambda(k_to) - self._lambda(k_from)
        alpha_t = 1 - self.t[k_to]
        return self.t[k_to] / self.t[k_from] * x - alpha_t * torch.expm1(-h) * m0, h, alpha_t

    def _correct(self, i: int, m: Tensor, x_prev: Tensor) -> Tensor:
        """UniC: redo the step that led to time i with the model output m now known there."""
        m0 = self.outputs[-1]
        x_t, h, alpha_t = self._first_order(i - 1, i, x_prev, m0)
        b_h = torch.expm1(-h)  # bh2
        if self.order == 1:
            return x_t - alpha_t * b_h * (0.5 * (m - m0))
        rk = (self._lambda(i - 2) - self._lambda(i - 1)) / h
        d1 = (self.outputs[-2] - m0) / rk
        phi = b_h / -h - 1  # h phi_2(h) / h, then phi_3 below
        b = torch.stack([phi / b_h, (phi / -h - 0.5) * 2 / b_h])
        rhos = torch.linalg.solve(torch.tensor([[1.0, 1.0], [float(rk), 1.0]]), b)
        return x_t - alpha_t * b_h * (rhos[0] * d1 + rhos[1] * (m - m0))

    def step(self, i: int, v: Tensor, x: Tensor) -> Tensor:
        """From time i to i + 1, given the velocity v at (x, time i)."""
        m = x - self.t[i] * v  # the data prediction
        if i > 0 and self.last is not None:
            x = self._correct(i, m, self.last)
        self.outputs = [self.outputs[1], m]
        self.order = min(2, self.n - i, self.warm + 1)
        self.last = x
        x_t, h, alpha_t = self._first_order(i, i + 1, x, m)
        if self.order == 2:  # UniP: the second-order term from the last two data predictions
            rk = (self._lambda(i - 1) - self._lambda(i)) / h
            x_t = x_t - alpha_t * torch.expm1(-h) * (0.5 * (self.outputs[-2] - m) / rk)
        self.warm = min(self.warm + 1, 2)
        return x_t.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Caption dropout for classifier-free guidance
# ----------------------------------------------------------------------------------------------


def caption_dropout_mask(n: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(n,) bool, True where the caption is replaced by the null condition; deterministic under a generator."""
    if not (0.0 <= p <= 1.0):
        raise InputError(f"caption dropout probability must be in [0, 1], got {p}")
    device = generator.device if generator is not None else None
    return (torch.rand((n,), generator=generator, device=device) < p).cpu()


def drop_captions(
    captions: Sequence[str], p: float, generator: torch.Generator | None = None, null: str = ""
) -> tuple[list[str], Tensor]:
    """Replace a fraction ``p`` of captions by ``null`` (the empty prompt, which the pipeline also uses
    as the unconditional input of classifier-free guidance). Returns (captions, dropped (n,) bool)."""
    dropped = caption_dropout_mask(len(captions), p, generator)
    return [null if d else c for c, d in zip(captions, dropped.tolist())], dropped


def drop_condition(
    context: Tensor,
    context_mask: Tensor,
    null_context: Tensor,
    null_mask: Tensor,
    p: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Caption dropout on embeddings: rows of ``context`` (B, L, D) / ``context_mask`` (B, L) are
    replaced by the null embedding (1, L0, D) / (1, L0) with probability ``p``.

    Both are zero-padded to the longer length first. Returns (context, mask, dropped (B,) bool).
    """
    if null_context.ndim == 2:
        null_context, null_mask = null_context[None], null_mask.reshape(1, -1)
    dropped = caption_dropout_mask(context.shape[0], p, generator)
    length = max(context.shape[1], null_context.shape[1])
    context, context_mask = _pad_tokens(context, context_mask, length)
    null_context, null_mask = _pad_tokens(null_context.to(context), null_mask.to(context_mask.device), length)
    d = dropped.to(context.device)
    context = torch.where(d[:, None, None], null_context, context)
    context_mask = torch.where(d[:, None], null_mask.bool(), context_mask.bool())
    return context, context_mask, dropped


def _pad_tokens(tokens: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    pad = length - tokens.shape[1]
    if pad == 0:
        return tokens, mask.bool()
    tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad))
    mask = torch.nn.functional.pad(mask.bool(), (0, pad), value=False)
    return tokens, mask


# ----------------------------------------------------------------------------------------------
# Sampling: guidance (in exactly one place), Euler and Heun, conditioning on given frames, SDEdit
# ----------------------------------------------------------------------------------------------


def guided_velocity(
    model_fn: ModelFn,
    x: Tensor,
    t: Tensor,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any] | None,
    guidance_scale: float,
    *,
    batch: bool = False,
) -> Tensor:
    """Classifier-free guidance: ``v_u + s (v_c - v_u)``. The only place guidance is applied.

    ``guidance_scale == 1`` is the plain conditional velocity, so the unconditional pass is skipped
    (half the cost). ``batch=True`` runs both passes as one call of batch 2B (faster on a GPU); it
    needs tensor arguments of equal shapes in ``cond`` and ``uncond`` (pad text embeddings to one
    length first) and equal non-tensor ones.
    """
    if guidance_scale == 1.0:
        return model_fn(x, t, **cond)
    if uncond is None:
        raise InputError(f"guidance_scale {guidance_scale} needs an unconditional input (uncond)")
    if not batch:
        v_cond = model_fn(x, t, **cond)
        v_uncond = model_fn(x, t, **uncond)
    else:
        if set(cond) != set(uncond):
            raise InputError(f"cond and uncond take different arguments: {sorted(cond)} vs {sorted(uncond)}")
        both = {}
        for k in cond:
            c, u = cond[k], uncond[k]
            if torch.is_tensor(c) and torch.is_tensor(u):
                if c.shape != u.shape:
                    raise InputError(f"batched guidance needs equal shapes for {k!r}: {tuple(c.shape)} vs {tuple(u.shape)}")
                both[k] = torch.cat([c, u])
            elif c is u or c == u:
                both[k] = c
            else:
                raise InputError(f"batched guidance needs tensors or equal values for {k!r}")
        v_cond, v_uncond = model_fn(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def sample(
    model_fn: ModelFn,
    noise: Tensor,
    *,
    steps: int = 30,
    shift: float = 1.0,
    method: str = "euler",
    guidance_scale: float = 1.0,
    cond: Mapping[str, Any] | None = None,
    uncond: Mapping[str, Any] | None = None,
    given: Tensor | None = None,
    given_mask: Tensor | None = None,
    t_start: float = 1.0,
    timesteps: Tensor | None = None,
    model_times: Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    cfg_batch: bool = False,
    guidance_min_t: float = 0.0,
    low_noise: tuple[float, ModelFn, float] | None = None,
) -> Tensor:
    """Integrate the flow ODE ``dx/dt = v(x, t)`` from ``t_start`` (1 = pure noise) to t = 0.

    Args:
        model_fn: ``model_fn(x, t, **cond) -> velocity``; ``t`` is (B,) per sample, or (B, T) per
            latent frame when ``given_mask`` is set. Its output is cast to x's dtype.
        noise: the state at ``t_start``: pure noise for text-to-video, ``x_t`` for SDEdit
            (see :func:`sdedit`).
        steps: number of steps (Euler: ``steps`` model calls; Heun: ``2 steps - 1``, each times 2
            with guidance).
        shift: timestep shift of the schedule (:func:`shift_for` gives a size-dependent one).
        method: "euler" (first order) or "heun" (second order, Karras et al. 2022 alg. 1 without
            churn: trapezoidal correction, plain Euler on the last step to t = 0).
        guidance_scale: classifier-free guidance scale; 1 disables guidance and the unconditional pass.
        cond, uncond: keyword arguments of ``model_fn`` for the conditional / unconditional pass
            (e.g. ``{"context": ..., "context_mask": ...}``).
        given, given_mask: clean latents (B, C, T, H, W) and (B, T) bool: the frames marked True are
            given (an image, the end of a clip); the model sees them at t = 0 and they are written back
            bit for bit after every step, so the result holds them exactly.
        t_start: start time in (0, 1]; less than 1 for SDEdit (noising strength).
        timesteps: an explicit decreasing schedule (steps + 1,) ending at 0 instead of the shifted one.
        callback: ``callback(step, t, x)`` after each step, with the new time and state.
        progress: show a tqdm progress bar.
        cfg_batch: run the conditional and unconditional passes as one batch of 2B (see
            :func:`guided_velocity`); same result, fewer and larger model calls.
        guidance_min_t: guide only the model calls at ``t >= guidance_min_t``; those below it run the
            conditional pass alone (half their cost). Layout and colours are settled at high noise, so
            the last, low-noise steps gain little from guidance (0: guide every call).
        low_noise: ``(boundary, model_fn_2, guidance_scale_2)``: a second expert for the calls at model
            time ``t < boundary``, with its own guidance scale (Wan2.2 A14B: the first model denoises
            the high-noise steps, the second the rest).

    Returns the sample at t = 0, same shape and dtype as ``noise``.
    """
    from tqdm.auto import tqdm

    if method not in ("euler", "heun", "unipc"):
        raise InputError(f"unknown sampler {method!r}; choose 'euler', 'heun' or 'unipc'")
    if not 0.0 <= guidance_min_t <= 1.0:
        raise InputError(f"guidance_min_t must be between 0 and 1, got {guidance_min_t}")
    cond = dict(cond or {})
    uncond = None if uncond is None else dict(uncond)
    if timesteps is None:
        ts = timestep_schedule(steps, shift=shift, t_start=t_start).tolist()
    else:
        ts = [float(v) for v in timesteps]
        if len(ts) < 2 or ts[-1] != 0.0 or any(a <= b for a, b in zip(ts, ts[1:])):
            raise InputError("timesteps must be strictly decreasing and end at 0")
    x = noise.clone()
    B = x.shape[0]

    hold = None  # (B, 1, T, 1, 1) bool: where the given frames are
    if given_mask is not None:
        if given is None:
            raise InputError("given_mask needs the given latents")
        if x.ndim != 5 or given.shape != x.shape or given_mask.shape != (B, x.shape[2]):
            raise InputError(
                f"given latents {tuple(given.shape)} and given_mask {tuple(given_mask.shape)} must match "
                f"the latents {tuple(x.shape)} as (B, C, T, H, W) and (B, T)"
            )
        given_mask = given_mask.to(device=x.device, dtype=torch.bool)
        hold = given_mask[:, None, :, None, None]
        given = given.to(device=x.device, dtype=x.dtype)
        x = torch.where(hold, given, x)
    elif given is not None:
        raise InputError("given latents need a given_mask (B, T) saying which frames are given")

    def velocity(x: Tensor, t: float) -> Tensor:
        tt = torch.full((B,), t, device=x.device, dtype=torch.float32)
        if given_mask is not None:
            # Per-frame timesteps: given frames are clean, the rest at the current noise level.
            tt = torch.where(given_mask, 0.0, tt[:, None])  # (B, T)
        fn, scale = model_fn, guidance_scale
        if low_noise is not None and t < low_noise[0]:
            _, fn, scale = low_noise
        scale = scale if t >= guidance_min_t else 1.0
        return guided_velocity(fn, x, tt, cond, uncond, scale, batch=cfg_batch).to(x.dtype)

    def held(x: Tensor) -> Tensor:
        return x if hold is None else torch.where(hold, given, x)

    # The times the network sees: the integration times, unless a solver evaluates it elsewhere
    # (diffusers' UniPC passes the integer training step each time truncates to).
    at = ts if model_times is None else [float(v) for v in model_times]
    if len(at) != len(ts):
        raise InputError(f"model_times has {len(at)} entries for {len(ts)} timesteps")
    unipc = _UniPC(torch.tensor(ts)) if method == "unipc" else None
    with torch.no_grad():
        for i in tqdm(range(len(ts) - 1), desc="sampling", disable=not progress, leave=False):
            t, t_next = ts[i], ts[i + 1]
            dt = t_next - t  # negative: we integrate towards the data
            v = velocity(x, at[i])
            if unipc is not None:
                x = held(unipc.step(i, v, x))
                if callback is not None:
                    callback(i, t_next, x)
                continue
            x_euler = held(x + dt * v)
            if method == "heun" and t_next > 0:
                v_next = velocity(x_euler, t_next)
                x = held(x + dt * 0.5 * (v + v_next))
            else:
                x = x_euler
            if callback is not None:
                callback(i, t_next, x)
    return x


def sdedit(
    model_fn: ModelFn,
    x0: Tensor,
    *,
    strength: float,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    **sample_kwargs: Any,
) -> Tensor:
    """Edit clean latents ``x0`` (SDEdit, Meng et al. 2022): noise them to ``t = strength`` along the
    path, then denoise from there. strength 1 ignores x0 entirely; small strengths keep its layout.
    Other keyword arguments go to :func:`sample` (steps, shift, guidance, given frames, ...)."""
    if not (0.0 < strength <= 1.0):
        raise InputError(f"strength must be in (0, 1], got {strength}")
    xt = sample_path(x0, strength, noise=noise, generator=generator).xt
    return sample(model_fn, xt, t_start=strength, **sample_kwargs)


__all__ = [
    "PathSample",
    "expand_t",
    "sample_path",
    "flow_loss",
    "shift_time",
    "unshift_time",
    "latent_tokens",
    "shift_for",
    "flow_match_euler_schedule",
    "unipc_schedule",
    "sample_timesteps",
    "timestep_schedule",
    "caption_dropout_mask",
    "drop_captions",
    "drop_condition",
    "guided_velocity",
    "sample",
    "sdedit",
]
