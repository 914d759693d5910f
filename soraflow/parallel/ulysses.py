"""Ulysses sequence parallelism: the tokens of one video split across ranks, all-to-all around attention.

A Sora-class clip is 10^5..10^6 tokens; its activations do not fit one device. With ``P`` ranks in a
sequence-parallel group, each rank keeps ``N / P`` tokens through every transformer block. Everything
in a block is per token (modulation, norms, projections, cross-attention to the text, the FFN) except
self-attention, which needs all tokens. DeepSpeed-Ulysses (Jacobs et al., 2023) turns that into two
all-to-alls: before attention, trade the token split for a head split (each rank gets all N tokens of
H / P heads), run ordinary attention, and trade back::

    q, k, v  (B, H, N/P, d)  --all-to-all-->  (B, H/P, N, d)  --SDPA-->  --all-to-all-->  (B, H, N/P, d)

Communication per layer is 4 tensors of N D / P per rank, independent of P; the head count must be a
multiple of P.

:func:`apply_sequence_parallel` does it to a :class:`~soraflow.models.dit.DiT` without touching its
code: forward pre-hooks on each block take this rank's share of the tokens (and of the rotary table
and the per-group modulation), each block's self-attention gets :func:`ulysses_attention` through
``Attention.attention_fn``, and a hook on the last block all-gathers the tokens again, so the DiT's
input and output are the whole video on every rank (the patch embedding and output layer, a few
percent of the FLOPs, run replicated).

Training: every rank of the group computes the same loss on the gathered output. The gather's
backward hands each rank ``P x`` the gradient of its own tokens; the data-parallel gradient average
over all ranks (DDP or FSDP, over the whole world) then yields exactly the full gradient: block
weights see the sum of every rank's token contributions, the replicated layers their (identical)
value. The ranks of a group must get the same batch, timesteps and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..errors import InputError

# ----------------------------------------------------------------------------------------------
# Collectives with autograd


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """Chunk i of dim 0 goes to rank i; chunk j of the result came from rank j (shape unchanged)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def _heads_to_tokens(x: torch.Tensor, group) -> torch.Tensor:
    """(B, H, N/P, d) this rank's tokens, all heads -> (B, H/P, N, d) all tokens, this rank's heads."""
    P = dist.get_world_size(group)
    B, H, n, d = x.shape
    x = x.reshape(B, P, H // P, n, d).transpose(0, 1)  # (P, B, H/P, n, d): chunk i -> rank i
    x = _all_to_all(x, group)  # (P, B, H/P, n, d): chunk j = rank j's tokens
    return x.permute(1, 2, 0, 3, 4).reshape(B, H // P, P * n, d)


def _tokens_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """Inverse of :func:`_heads_to_tokens`: (B, H/P, N, d) -> (B, H, N/P, d)."""
    P = dist.get_world_size(group)
    B, h, N, d = x.shape
    x = x.reshape(B, h, P, N // P, d).permute(2, 0, 1, 3, 4)  # (P, B, H/P, n, d): chunk i = rank i's tokens
    x = _all_to_all(x, group)  # chunk j = head group j
    return x.transpose(0, 1).reshape(B, P * h, N // P, d)


class _SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _heads_to_tokens(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _tokens_to_heads(grad, ctx.group), None


class _HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _tokens_to_heads(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _heads_to_tokens(grad, ctx.group), None


class _GatherTokens(torch.autograd.Function):
    """All-gather along ``dim``; backward: ``P x`` this rank's slice of the (identical) gradient."""

    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        P = dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(P)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.size = x.shape[dim]
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        P, r = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        # Each rank computed the same loss from the gathered tokens; the data-parallel mean over the
        # P ranks of the group must come out as the sum of the token contributions: hence P x.
        return grad.narrow(ctx.dim, r * ctx.size, ctx.size) * P, None, None


def gather_tokens(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """All-gather the token shards of ``x`` along ``dim`` (differentiable, see :class:`_GatherTokens`)."""
    return _GatherTokens.apply(x, dim, group)


# ----------------------------------------------------------------------------------------------
# Attention


def ulysses_attention(
    q: torch.Tensor,  # (B, H, N/P, d) this rank's tokens
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    *,
    group,
    **sdpa_kwargs,
) -> torch.Tensor:
    """Exact attention over the tokens of all ranks of ``group``; returns (B, H, N/P, d) for this rank's tokens.

    Same signature as ``F.scaled_dot_product_attention`` (plus ``group``). Self-attention only:
    ``attn_mask`` must be None (a key mask would have to be split like the keys).
    """
    if attn_mask is not None:
        raise InputError("ulysses_attention does not take an attention mask (self-attention over video tokens has none)")
    P = dist.get_world_size(group)
    if q.shape[1] % P:
        raise InputError(f"sequence parallelism over {P} ranks needs the attention heads ({q.shape[1]}) to be a multiple of {P}")
    q, k, v = (_SeqToHead.apply(t, group) for t in (q, k, v))  # (B, H/P, N, d)
    out = F.scaled_dot_product_attention(q, k, v, **sdpa_kwargs)
    return _HeadToSeq.apply(out, group)  # (B, H, N/P, d)


class UlyssesAttention:
    """``attention_fn`` for one process group (a class, not a closure, so a model copy keeps it)."""

    def __init__(self, group):
        self.group = group

    def __call__(self, q, k, v, attn_mask=None, **kwargs):
        return ulysses_attention(q, k, v, attn_mask, group=self.group, **kwargs)

    def __deepcopy__(self, memo):  # process groups are handles: share, never copy
        return self


# ----------------------------------------------------------------------------------------------
# Whole DiT


@dataclass
class SequenceParallel:
    """Handle returned by :func:`apply_sequence_parallel`; ``remove()`` restores single-device behaviour."""

    group: object
    size: int
    rank: int
    handles: list = field(default_factory=list)
    attentions: list = field(default_factory=list)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for attn in self.attentions:
            attn.attention_fn = None
        self.handles.clear()
        self.attentions.clear()


def _split(G: int, S: int, P: int) -> int:
    """Which axis of the (B, G, S, D) residual stream to split: 1 (timestep groups) or 2 (tokens in a group).

    G is 1 (one t per sample), T' (per latent frame) or N (per token). Splitting whole groups keeps the
    modulation local; otherwise every rank takes the same share of each group.
    """
    if G % P == 0:
        return 1
    if S % P == 0:
        return 2
    raise InputError(
        f"cannot split {G} timestep group(s) of {S} tokens over {P} sequence-parallel ranks: "
        f"the latent frames ({G}) or the tokens per frame ({S}) must be a multiple of {P}"
    )


def apply_sequence_parallel(model, group=None) -> SequenceParallel:
    """Make ``model`` (a :class:`~soraflow.models.dit.DiT`) split every video's tokens over ``group``.

    Every rank of the group must call the model with the same inputs; each gets the whole output.
    Apply it after activation checkpointing and before FSDP/DDP (see :func:`soraflow.train.parallelize.parallelize`).
    """
    group = group if group is not None else dist.group.WORLD
    P, r = dist.get_world_size(group), dist.get_rank(group)
    if model.config.num_attention_heads % P:
        raise InputError(f"sequence parallelism over {P} ranks needs num_attention_heads ({model.config.num_attention_heads}) divisible by {P}")
    sp = SequenceParallel(group=group, size=P, rank=r)
    blocks = list(model.blocks)
    state: dict = {}  # the split axis of the current forward, from the shard hooks to the gather hook
    for i, block in enumerate(blocks):
        block.attn1.attention_fn = UlyssesAttention(group)
        sp.attentions.append(block.attn1)
        sp.handles.append(block.register_forward_pre_hook(_make_shard_hook(P, r, state), with_kwargs=True))
    sp.handles.append(blocks[-1].register_forward_hook(_make_gather_hook(group, state)))
    return sp


def _make_shard_hook(P: int, r: int, state: dict):
    def hook(module, args, kwargs):
        # DiTBlock.forward(x, context, mod, rope, mask, dtype); the DiT passes the full mod and rope
        # to every block, and the full x to the first one only (later blocks get our shard).
        names = ("x", "context", "mod", "rope", "mask", "dtype")
        values = dict(zip(names, args))
        values.update(kwargs)
        x, mod, rope = values["x"], values["mod"], values["rope"]
        G, N = mod.shape[1], rope.shape[0]
        S = N // G
        axis = state["axis"] = _split(G, S, P)
        n = (G if axis == 1 else S) // P
        if x.shape[1] == G and x.shape[2] == S:  # full stream: take this rank's part
            x = x.narrow(axis, r * n, n)
        if axis == 1:
            mod = mod.narrow(1, r * n, n)
        rope = rope.reshape(G, S, *rope.shape[1:]).narrow(axis - 1, r * n, n).reshape(-1, *rope.shape[1:])
        values.update(x=x, mod=mod, rope=rope)
        return tuple(values[k] for k in names[: len(args)]), {k: values[k] for k in kwargs}

    return hook


def _make_gather_hook(group, state: dict):
    def hook(module, args, output):
        return gather_tokens(output, state["axis"], group)  # axis: set by this block's shard hook

    return hook

__all__ = ["SequenceParallel", "UlyssesAttention", "apply_sequence_parallel", "gather_tokens", "ulysses_attention"]
