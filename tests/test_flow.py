"""Rectified flow against closed-form answers (no network): Gaussian data has an exact velocity field."""

from __future__ import annotations

import math

import pytest
import torch

from soraflow import flow
from soraflow.errors import InputError


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run thousands of tiny tensor ops; intra-op threads only add synchronisation, which
    on a loaded 2-core machine made the sampling test ~30x slower (0.2 s vs 7 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A 3-D Gaussian with correlations and unequal scales, so mean and covariance errors are visible.
MU = torch.tensor([1.5, -0.5, 0.25], dtype=torch.float64)
_L = torch.tensor([[1.2, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.4, 0.3]], dtype=torch.float64)
SIGMA = _L @ _L.T


def gaussian_velocity(mu: torch.Tensor, sigma: torch.Tensor):
    """The exact rectified-flow velocity for x0 ~ N(mu, sigma), noise ~ N(0, I), x_t = (1-t) x0 + t noise.

    With C_t = (1-t)^2 sigma + t^2 I:  E[x0|x] = mu + (1-t) sigma C_t^-1 (x - (1-t) mu),
    E[noise|x] = t C_t^-1 (x - (1-t) mu),  v = E[noise|x] - E[x0|x].
    """
    # Sigma = Q diag(lam) Q^T, so C_t^-1 = Q diag(1 / ((1-t)^2 lam + t^2)) Q^T: no batched solve needed.
    lam, q = torch.linalg.eigh(sigma)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m, l, b = mu.to(x.dtype), lam.to(x.dtype), q.to(x.dtype)
        t = t.to(x.dtype)[:, None]  # (B, 1)
        y = (x - (1 - t) * m) @ b  # (B, d) in the eigenbasis
        r = y / ((1 - t) ** 2 * l + t**2)  # C_t^-1 (x - (1-t) mu), eigenbasis
        e_noise = t * r
        e_x0 = (m @ b) + (1 - t) * l * r
        return (e_noise - e_x0) @ b.T

    return model_fn


def affine_pushforward(method: str, steps: int, shift: float = 1.0):
    """The Gaussian velocity is affine in x, so every Euler/Heun step is affine and the sampler maps
    noise z to A z + b exactly; running it on z = 0 and the unit vectors gives A and b without any
    sampling noise. The pushforward of N(0, I) is N(b, A A^T)."""
    d = len(MU)
    z = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
    out = flow.sample(gaussian_velocity(MU, SIGMA), z, steps=steps, shift=shift, method=method, progress=False)
    b = out[0]
    a = (out[1:] - b).T
    return b, a @ a.T


def test_path_endpoints_and_target():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 6, 7, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    p0 = flow.sample_path(x0, torch.zeros(4), noise)
    p1 = flow.sample_path(x0, torch.ones(4), noise)
    assert torch.equal(p0.xt, x0)
    assert torch.equal(p1.xt, noise)
    assert torch.equal(p0.target, noise - x0)
    # per-frame t: frame k of sample b sits at t[b, k]
    t = torch.rand(4, 5, generator=g)
    p = flow.sample_path(x0, t, noise)
    for b in range(4):
        for k in range(5):
            want = (1 - t[b, k]) * x0[b, :, k] + t[b, k] * noise[b, :, k]
            assert torch.allclose(p.xt[b, :, k], want, atol=1e-6)
    # the velocity is the time derivative of the path
    eps = 1e-3
    pa, pb = flow.sample_path(x0, t, noise), flow.sample_path(x0, t + eps, noise)
    assert torch.allclose((pb.xt - pa.xt) / eps, p.target, atol=1e-3)
    with pytest.raises(InputError):
        flow.sample_path(x0, torch.rand(4, 3), noise)


def test_path_noise_from_generator_is_deterministic():
    x0 = torch.zeros(2, 8)
    a = flow.sample_path(x0, 0.5, generator=torch.Generator().manual_seed(3))
    b = flow.sample_path(x0, 0.5, generator=torch.Generator().manual_seed(3))
    c = flow.sample_path(x0, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.xt, b.xt) and not torch.equal(a.xt, c.xt)
    assert torch.allclose(a.xt, 0.5 * a.noise)


def test_path_marginal_matches_closed_form_covariance():
    # x_t of Gaussian data is N((1-t) mu, C_t) -- the quantity the exact velocity is built from.
    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 0.3
    x0 = MU + torch.randn(n, 3, generator=g, dtype=torch.float64) @ _L.T
    xt = flow.sample_path(x0, t, generator=g).xt
    c = (1 - t) ** 2 * SIGMA + t**2 * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(xt.mean(0), (1 - t) * MU, atol=0.01)
    assert torch.allclose(torch.cov(xt.T), c, atol=0.01)


def test_flow_loss_frame_mask_excludes_given_frames():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 4, 3, 5, 5, generator=g)
    pred = target.clone()
    pred[:, :, 0] += 10.0  # huge error only on frame 0, the given frame
    pred[:, :, 1:] += 0.5
    mask = torch.tensor([[False, True, True], [False, True, True]])
    assert flow.flow_loss(pred, target, mask).item() == pytest.approx(0.25, rel=1e-5)
    assert flow.flow_loss(pred, target).item() == pytest.approx((100 + 2 * 0.25) / 3, rel=1e-5)
    # uneven masks: the mean is over counted elements, not per sample
    mask2 = torch.tensor([[False, True, False], [False, True, True]])
    assert flow.flow_loss(pred, target, mask2).item() == pytest.approx(0.25, rel=1e-5)
    # nothing counted: zero with a gradient, not NaN
    p = pred.clone().requires_grad_()
    loss = flow.flow_loss(p, target, torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(p.grad == 0)


def test_flow_loss_weight_is_a_weighted_mean_over_counted_cells():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 4, 3, 5, 5, generator=g)
    pred = target + torch.randn(2, 4, 3, 5, 5, generator=g)
    mask = torch.tensor([[False, True, True], [True, True, False]])
    # a constant weight changes nothing, with or without a frame mask
    for m in (None, mask):
        assert flow.flow_loss(pred, target, m, weight=torch.full((2, 1, 3, 5, 5), 7.0)).item() == pytest.approx(
            flow.flow_loss(pred, target, m).item(), rel=1e-5)
    # all the weight on one cell: the loss is that cell's error (mean over channels)
    w = torch.zeros(2, 1, 3, 5, 5)
    w[1, 0, 1, 2, 3] = 1.0
    cell = (pred - target)[1, :, 1, 2, 3].square().mean()
    assert flow.flow_loss(pred, target, mask, weight=w).item() == pytest.approx(cell.item(), rel=1e-5)
    # ...unless that cell's frame is given (not counted): the weight there does not count
    w[0, 0, 0, 0, 0] = 100.0  # frame 0 of sample 0 is given
    assert flow.flow_loss(pred, target, mask, weight=w).item() == pytest.approx(cell.item(), rel=1e-5)
    # weights 1 and 3 on two halves: a 1:3 mix of the halves' losses
    w = torch.ones(2, 1, 3, 5, 5)
    w[..., 3:] = 3.0
    err = (pred - target).square()
    left, right = err[..., :3].mean(), err[..., 3:].mean()
    expect = (left * 3 + 3 * right * 2) / (3 + 3 * 2)  # 3 columns at weight 1, 2 columns at weight 3
    assert flow.flow_loss(pred, target, weight=w).item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(InputError, match="weight"):
        flow.flow_loss(pred, target, weight=torch.ones(2, 4, 3, 5, 5))


def test_shift_monotone_fixed_points_and_inverse():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for s in (0.5, 1.0, 3.0, 7.0):
        ts = flow.shift_time(t, s)
        assert ts[0] == 0 and ts[-1] == 1
        assert torch.all(ts[1:] > ts[:-1])
        assert torch.allclose(flow.unshift_time(ts, s), t, atol=1e-12)
        # the shift adds log s in logit space
        inner = t[1:-1]
        assert torch.allclose(torch.logit(flow.shift_time(inner, s)), torch.logit(inner) + math.log(s), atol=1e-9)
    assert torch.all(flow.shift_time(t[1:-1], 3.0) > t[1:-1])  # s > 1 moves towards noise
    assert torch.equal(flow.shift_time(t, 1.0), t)


def test_shift_for_grows_with_tokens_and_is_clamped():
    assert flow.shift_for(256) == pytest.approx(1.0)
    assert flow.shift_for(32760) == pytest.approx(5.0)
    assert flow.shift_for(16) == pytest.approx(1.0)  # below the base: unshifted
    assert flow.shift_for(10**7) == pytest.approx(5.0)  # above the max: clamped
    values = [flow.shift_for(n) for n in (256, 512, 1024, 4096, 16384, 32760)]
    assert all(a < b for a, b in zip(values, values[1:]))
    # log-log linear: the geometric mean of the token counts gets the geometric mean of the shifts
    assert flow.shift_for(int(math.sqrt(256 * 32760))) == pytest.approx(math.sqrt(5.0), rel=1e-3)
    # the tiny world model's grid and Wan's 480p grid
    assert flow.latent_tokens((4, 16, 16)) == 256
    assert flow.latent_tokens((21, 60, 104)) == 32760
    with pytest.raises(InputError):
        flow.shift_for(0)


def test_logit_normal_timesteps_mean_median_and_shift():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_timesteps(100_000, generator=g)
    assert t.shape == (100_000,) and t.min() > 0 and t.max() < 1
    assert t.mean().item() == pytest.approx(0.5, abs=0.005)  # symmetric around 1/2
    assert t.median().item() == pytest.approx(0.5, abs=0.005)
    assert torch.logit(t.double()).std().item() == pytest.approx(1.0, abs=0.01)
    t = flow.sample_timesteps(100_000, mean=-0.5, std=0.8, shift=3.0, generator=g)
    want_median = flow.shift_time(1 / (1 + math.exp(0.5)), 3.0)
    assert t.median().item() == pytest.approx(want_median, abs=0.005)
    logit = torch.logit(t.double())
    assert logit.mean().item() == pytest.approx(-0.5 + math.log(3.0), abs=0.01)
    assert logit.std().item() == pytest.approx(0.8, abs=0.01)
    a = flow.sample_timesteps(8, generator=torch.Generator().manual_seed(5))
    b = flow.sample_timesteps(8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_a_terminal_fraction_of_timesteps_is_exactly_one_and_the_rest_is_unchanged():
    plain = flow.sample_timesteps(100_000, shift=4.0, generator=torch.Generator().manual_seed(1))
    t = flow.sample_timesteps(100_000, shift=4.0, terminal=0.1, generator=torch.Generator().manual_seed(1))
    at_one = t == 1
    assert at_one.float().mean().item() == pytest.approx(0.1, abs=0.004)
    assert torch.equal(t[~at_one], plain[~at_one])  # the same logit-normal draws, some replaced by 1
    assert (plain < 1).all()  # without it, t = 1 never occurs
    with pytest.raises(InputError, match="terminal fraction"):
        flow.sample_timesteps(4, terminal=1.5)


def test_caption_dropout_rate_and_determinism():
    caps = [f"caption {i}" for i in range(20_000)]
    out, dropped = flow.drop_captions(caps, 0.1, torch.Generator().manual_seed(0))
    assert dropped.float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert all((o == "") == d for o, d in zip(out, dropped.tolist()))
    assert all(o == c for o, c, d in zip(out, caps, dropped.tolist()) if not d)
    again, _ = flow.drop_captions(caps, 0.1, torch.Generator().manual_seed(0))
    assert again == out
    assert not flow.drop_captions(caps, 0.0)[1].any() and flow.drop_captions(caps, 1.0)[1].all()
    with pytest.raises(InputError):
        flow.drop_captions(caps, 1.5)


def test_drop_condition_replaces_rows_with_padded_null():
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(64, 5, 4, generator=g) + 3
    mask = torch.ones(64, 5, dtype=torch.bool)
    null, null_mask = torch.full((1, 2, 4), -1.0), torch.ones(1, 2, dtype=torch.bool)
    out, out_mask, dropped = flow.drop_condition(ctx, mask, null, null_mask, 0.5, torch.Generator().manual_seed(1))
    assert 10 < dropped.sum() < 54
    for i in range(64):
        if dropped[i]:
            assert torch.all(out[i, :2] == -1) and torch.all(out[i, 2:] == 0)
            assert out_mask[i].tolist() == [True, True, False, False, False]
        else:
            assert torch.equal(out[i], ctx[i]) and out_mask[i].all()


def test_guidance_scale_one_skips_unconditional_pass_and_formula():
    calls = []

    def model_fn(x, t, label):
        calls.append(label)
        return torch.full_like(x, 1.0 if label == "c" else 3.0)

    x = torch.zeros(2, 3)
    out = flow.sample(model_fn, x, steps=4, cond={"label": "c"}, uncond={"label": "u"}, progress=False)
    assert calls == ["c"] * 4
    assert torch.allclose(out, torch.full_like(x, -1.0))  # x(0) = x(1) - integral of v = 0 - 1
    calls.clear()
    out = flow.sample(
        model_fn, x, steps=4, guidance_scale=2.5, cond={"label": "c"}, uncond={"label": "u"}, progress=False
    )
    assert calls.count("c") == 4 and calls.count("u") == 4
    assert torch.allclose(out, torch.full_like(x, -(3.0 + 2.5 * (1.0 - 3.0))))
    calls.clear()
    flow.sample(model_fn, x, steps=4, method="heun", cond={"label": "c"}, progress=False)
    assert calls == ["c"] * 7  # Heun: two calls per step, one on the last step to t = 0
    with pytest.raises(InputError):
        flow.sample(model_fn, x, steps=2, guidance_scale=3.0, cond={"label": "c"}, progress=False)


def test_guidance_min_t_guides_only_the_high_noise_steps():
    calls = []

    def model_fn(x, t, label):
        calls.append((label, float(t[0])))
        return torch.full_like(x, 1.0 if label == "c" else 3.0)

    x = torch.zeros(2, 3)
    kw = dict(steps=8, shift=4.0, guidance_scale=2.5, cond={"label": "c"}, uncond={"label": "u"}, progress=False)
    ts = flow.timestep_schedule(8, shift=4.0).tolist()
    guided = [t for t in ts[:-1] if t >= 0.6]
    assert 0 < len(guided) < 8  # the threshold splits this schedule
    out = flow.sample(model_fn, x, guidance_min_t=0.6, **kw)
    assert [t for label, t in calls if label == "u"] == pytest.approx(guided)
    assert sum(label == "c" for label, _ in calls) == 8
    # Each guided step moves x by dt * (3 + 2.5 * (1 - 3)) = dt * -2, each unguided one by dt * 1.
    dts = [b - a for a, b in zip(ts, ts[1:])]
    want = sum(dt * (-2.0 if t >= 0.6 else 1.0) for t, dt in zip(ts, dts))
    assert torch.allclose(out, torch.full_like(x, want))
    calls.clear()
    flow.sample(model_fn, x, guidance_min_t=0.0, **kw)
    assert sum(label == "u" for label, _ in calls) == 8
    with pytest.raises(InputError, match="guidance_min_t"):
        flow.sample(model_fn, x, guidance_min_t=1.5, **kw)


def test_batched_guidance_equals_two_passes():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4, generator=g)
    batches = []

    def model_fn(x, t, context, context_mask):
        batches.append(x.shape[0])
        pooled = (context * context_mask[..., None]).sum(1) / context_mask.sum(1, keepdim=True)  # (B, 4)
        return torch.tanh(x @ w + pooled) * flow.expand_t(t, x)

    noise = torch.randn(3, 4, generator=g)
    cond = {"context": torch.randn(3, 5, 4, generator=g), "context_mask": torch.ones(3, 5, dtype=torch.bool)}
    uncond = {"context": torch.zeros(3, 5, 4), "context_mask": torch.zeros(3, 5, dtype=torch.bool)}
    uncond["context_mask"][:, :2] = True
    kw = dict(steps=5, method="heun", guidance_scale=4.0, cond=cond, uncond=uncond, progress=False)
    two = flow.sample(model_fn, noise, **kw)
    assert batches == [3] * 18
    batches.clear()
    one = flow.sample(model_fn, noise, cfg_batch=True, **kw)
    assert batches == [6] * 9
    assert torch.allclose(one, two, atol=1e-6)
    with pytest.raises(InputError, match="equal shapes"):
        flow.sample(model_fn, noise, cfg_batch=True, **{**kw, "uncond": {**uncond, "context": torch.zeros(3, 2, 4)}})


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_given_frames_are_held_bitwise_and_seen_at_t0(method):
    g = torch.Generator().manual_seed(0)
    B, C, T, H, W = 2, 4, 5, 3, 3
    noise = torch.randn(B, C, T, H, W, generator=g)
    given = torch.randn(B, C, T, H, W, generator=g)
    given_mask = torch.tensor([[True, False, False, False, False], [True, True, False, False, True]])
    seen = []

    def model_fn(x, t, context):
        assert t.shape == (B, T)
        assert torch.all(t[given_mask] == 0) and torch.all(t[~given_mask] > 0)
        hold = given_mask[:, None, :, None, None].expand_as(x)
        assert torch.equal(x[hold], given[hold])  # the model always sees the given frames exactly (Heun's predictor too)
        seen.append(t.clone())
        # a velocity that would move every frame, given or not, and mixes frames
        return 0.3 * x + x.mean(dim=2, keepdim=True) + context

    steps_seen = []
    out = flow.sample(
        model_fn,
        noise,
        steps=6,
        shift=3.0,
        method=method,
        cond={"context": 1.0},
        given=given,
        given_mask=given_mask,
        callback=lambda i, t, x: steps_seen.append((i, t, bool(torch.equal(x[0, :, 0], given[0, :, 0])))),
        progress=False,
    )
    hold = given_mask[:, None, :, None, None].expand_as(out)
    assert torch.equal(out[hold], given[hold])  # bit for bit
    assert not torch.allclose(out[~hold], noise[~hold])  # the other frames did move
    assert [s[0] for s in steps_seen] == list(range(6)) and steps_seen[-1][1] == 0.0
    assert all(s[2] for s in steps_seen)  # held after every step, not only at the end
    assert seen[0][0, 1].item() == 1.0  # the first call is at t = 1 for generated frames
    with pytest.raises(InputError):
        flow.sample(model_fn, noise, steps=2, given=given, progress=False)


def test_schedule_endpoints_shift_and_strength():
    s = flow.timestep_schedule(10, shift=3.0)
    assert s.shape == (11,) and s[0] == 1.0 and s[-1] == 0.0 and torch.all(s[1:] < s[:-1])
    assert torch.all(s[1:-1] > flow.timestep_schedule(10)[1:-1])  # shifted towards noise
    s = flow.timestep_schedule(7, shift=3.0, t_start=0.6)
    assert s.shape == (8,) and s[0] == 0.6 and s[-1] == 0.0
    with pytest.raises(InputError):
        flow.timestep_schedule(5, t_start=0.0)


def test_sdedit_small_strength_stays_close_and_starts_at_strength():
    x0 = MU + torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ _L.T
    field = gaussian_velocity(MU, SIGMA)
    first_t = []

    def model_fn(x, t):
        first_t.append(t[0].item())
        return field(x, t)

    kw = dict(steps=10, generator=torch.Generator().manual_seed(1), progress=False)
    near = flow.sdedit(model_fn, x0, strength=0.1, **kw)
    assert first_t[0] == pytest.approx(0.1)
    far = flow.sdedit(model_fn, x0, strength=0.9, **kw)
    assert (near - x0).norm() < 0.3 * (far - x0).norm()  # low strength keeps the input
    with pytest.raises(InputError):
        flow.sdedit(model_fn, x0, strength=1.5, steps=2, progress=False)


def test_exact_field_reproduces_gaussian_by_sampling():
    # Monte Carlo: many points pushed through the exact field land on N(mu, Sigma).
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 3, generator=g)
    field = gaussian_velocity(MU, SIGMA)
    # Step counts whose discretisation error (max 0.02 per covariance entry, from the exact affine
    # analysis below) leaves room for the Monte Carlo error (about 0.01).
    for method, steps in (("euler", 200), ("heun", 24)):
        x = flow.sample(field, z, steps=steps, shift=2.0, method=method, progress=False)
        assert torch.allclose(x.mean(0).double(), MU, atol=0.03), method
        assert torch.allclose(torch.cov(x.T).double(), SIGMA, atol=0.05), method


def test_heun_converges_faster_than_euler():
    def cov_error(method, steps, shift):
        b, cov = affine_pushforward(method, steps, shift=shift)
        # The mean of x_t moves linearly in t and the field is affine, so both solvers get it exactly;
        # the discretisation error shows up in the covariance.
        assert torch.allclose(b, MU, atol=1e-6)
        return (cov - SIGMA).norm().item()

    assert cov_error("heun", 10, 1.0) < cov_error("euler", 10, 1.0) / 5
    assert cov_error("heun", 10, 3.0) < cov_error("euler", 10, 3.0) / 2
    # convergence orders: doubling the steps divides Euler's error by ~2 and Heun's by ~4
    for shift in (1.0, 3.0):
        e2 = cov_error("euler", 40, shift) / cov_error("euler", 80, shift)
        h2 = cov_error("heun", 40, shift) / cov_error("heun", 80, shift)
        assert 1.7 < e2 < 2.3 and 3.4 < h2 < 4.6, (shift, e2, h2)
    assert cov_error("heun", 80, 1.0) < 1e-3  # and it reaches the target when refined
