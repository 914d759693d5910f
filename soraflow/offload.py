"""CPU offload: run a pipeline whose models do not all fit in the accelerator's memory at once.

Two modes, named as in diffusers:

* **model** (:meth:`SoraPipeline.enable_model_cpu_offload`): every model lives in CPU memory and is
  copied whole to the device when the pipeline uses it (text encoder, image encoder, the DiT or one of
  Wan2.2's two experts, the VAE); the model used before it leaves the device. The device holds the
  largest model and its activations. Each model crosses the bus once per use (the DiT once per window,
  two experts once each at their switch), so it costs little time.
* **sequential** (:meth:`SoraPipeline.enable_sequential_cpu_offload`): each model's repeated blocks
  (transformer layers, VAE stages: the outermost ``nn.ModuleList`` s of one class) are copied to the
  device for their own forward only and leave it after; the rest of a model (embeddings, norms, output
  heads) stays on the device while that model is in use. The device holds one block plus that rest.
  Every block crosses the bus at every call: several times slower, for when nothing else fits.

Weights do not change at inference, so nothing is copied back: a model leaving the device points at its
CPU tensors again. ``check=True`` points it at meta tensors instead (no storage), so a forward that
reaches a weight the offload did not place fails at once instead of quietly computing on the CPU; the
tests run that way on CPU-only machines, where the "device" is the CPU itself.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .errors import InputError

MODES = ("model", "sequential")


def execution_device(owner) -> torch.device:
    """Where a model computes: the offload's device while one is on, else where its weights are.
    ``owner`` is an ``nn.Module`` or a wrapper holding one as ``.model`` (text and image encoders)."""
    device = getattr(owner, "execution_device", None)
    return device if device is not None else next(_module_of(owner).parameters()).device


def _module_of(owner) -> nn.Module:
    return owner if isinstance(owner, nn.Module) else owner.model


class _Group:
    """Tensors that move together. Each distinct tensor is listed once with every (module, name) slot
    it fills, so weights tied between two modules (T5's shared embedding) move once and stay tied."""

    def __init__(self, modules: Iterable[nn.Module], taken: set[int], *, check: bool):
        slots: dict[int, list[tuple[nn.Module, str, bool]]] = {}
        self.home: list[torch.Tensor] = []  # the CPU tensor; for a parameter the Parameter object itself
        for module in modules:
            for table, is_param in ((module._parameters, True), (module._buffers, False)):
                for name, tensor in table.items():
                    if tensor is None or (id(tensor) in taken and id(tensor) not in slots):
                        continue  # no tensor, or another group's
                    if id(tensor) not in slots:
                        taken.add(id(tensor))
                        slots[id(tensor)] = []
                        self.home.append(tensor)
                    slots[id(tensor)].append((module, name, is_param))
        self.slots = list(slots.values())
        self.nbytes = sum(t.numel() * t.element_size() for t in self.home)
        self.away = [self._placeholder(t) for t in self.home] if check else self.home
        self.loaded = False

    @staticmethod
    def _placeholder(tensor: torch.Tensor) -> torch.Tensor:
        empty = torch.empty_like(tensor, device="meta")
        return nn.Parameter(empty, requires_grad=False) if isinstance(tensor, nn.Parameter) else empty

    def _put(self, values: list[torch.Tensor]) -> None:
        for places, value in zip(self.slots, values):
            for module, name, is_param in places:
                (module._parameters if is_param else module._buffers)[name] = value

    def load(self, device: torch.device) -> None:
        values = []
        for tensor in self.home:
            moved = tensor.detach().to(device, non_blocking=True)
            values.append(nn.Parameter(moved, requires_grad=False) if isinstance(tensor, nn.Parameter) else moved)
        self._put(values)
        self.loaded = True

    def unload(self) -> None:
        self._put(self.away)
        self.loaded = False

    def restore(self) -> None:
        """Back to the CPU tensors, for good (offload turned off)."""
        self._put(self.home)
        self.loaded = False


def _outer_blocks(module: nn.Module) -> list[nn.Module]:
    """The units sequential offload streams: the elements of the outermost ModuleLists under ``module``
    that repeat one class (transformer layers, VAE stages). A list of unlike parts (a feed-forward's
    [projection, dropout, linear], whose owner may read their weights without calling them) stays part
    of its owner."""
    blocks = []
    for child in module.children():
        if isinstance(child, nn.ModuleList) and len(child) > 1 and len({type(m) for m in child}) == 1:
            blocks.extend(child)
        else:
            blocks.extend(_outer_blocks(child))
    return blocks


class Offload:
    """Moves a pipeline's models between CPU memory and ``device`` (see the module docstring).

    ``models``: name -> model (an ``nn.Module`` or a wrapper with ``.model``), on the CPU. Each model's
    forward places it; code that uses a model by another method (the VAE's ``encode`` / ``decode``)
    calls :meth:`use` first. ``loaded_bytes`` / ``peak_bytes`` count the weight bytes on the device.
    """

    def __init__(self, models: dict[str, object], device: str | torch.device, mode: str, *, check: bool = False):
        if mode not in MODES:
            raise InputError(f"offload must be one of {', '.join(MODES)}, got {mode!r}")
        self.device, self.mode = torch.device(device), mode
        self.owners = dict(models)
        self.current: str | None = None
        self.loaded_bytes = self.peak_bytes = 0
        self._resident: dict[str, _Group] = {}
        self._blocks: dict[str, list[_Group]] = {}
        self._hooks = []
        for name, owner in self.owners.items():
            module = _module_of(owner)
            if any(p.device.type != "cpu" for p in module.parameters()):
                raise InputError(f"offload starts from models in CPU memory; {name} is on another device")
            taken: set[int] = set()
            blocks = _outer_blocks(module) if mode == "sequential" else []
            in_blocks = {id(m) for block in blocks for m in block.modules()}
            self._resident[name] = _Group([m for m in module.modules() if id(m) not in in_blocks], taken, check=check)
            self._blocks[name] = [_Group(block.modules(), taken, check=check) for block in blocks]
            self._hooks.append(module.register_forward_pre_hook(lambda _m, _a, name=name: self.use(name)))
            for block, group in zip(blocks, self._blocks[name]):
                self._hooks.append(block.register_forward_pre_hook(lambda _m, _a, g=group: self._load(g)))
                self._hooks.append(block.register_forward_hook(lambda _m, _a, _o, g=group: self._unload(g)))
            owner.execution_device = self.device
        for groups in ([self._resident[n]] + self._blocks[n] for n in self.owners):
            for group in groups:
                group.unload()

    def _load(self, group: _Group) -> None:
        if not group.loaded:
            group.load(self.device)
            self.loaded_bytes += group.nbytes
            self.peak_bytes = max(self.peak_bytes, self.loaded_bytes)

    def _unload(self, group: _Group) -> None:
        if group.loaded:
            group.unload()
            self.loaded_bytes -= group.nbytes

    def use(self, name: str) -> None:
        """Put model ``name`` on the device (whole, or its non-block part when sequential) and take
        the model used before it off."""
        if name == self.current:
            return
        self.release()
        self._load(self._resident[name])
        self.current = name

    def release(self) -> None:
        """Take everything off the device (the end of a generation)."""
        if self.current is not None:
            self._unload(self._resident[self.current])
            for group in self._blocks[self.current]:
                self._unload(group)
            self.current = None

    def on_device(self) -> list[str]:
        """The models with weights on the device now."""
        return [n for n in self.owners
                if self._resident[n].loaded or any(g.loaded for g in self._blocks[n])]

    def remove(self) -> None:
        """Turn offload off: hooks removed, every model back on its CPU tensors."""
        self.release()
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for name, owner in self.owners.items():
            for group in [self._resident[name]] + self._blocks[name]:
                group.restore()
            owner.execution_device = None


__all__ = ["MODES", "Offload", "execution_device"]
