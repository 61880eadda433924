"""Torch models for transformer adaptation: a tiny transformer, LoRA and LoRAFusion adapters.

:class:`TinyTransformer` is a small pre-LN transformer classifier (token and
learned position embeddings, encoder blocks, optional decoder blocks, mean
pooling, one linear head per task). Every GEMM with a weight (attention
projections, feed-forward layers, heads, adapters) is an :class:`IMCLinear`, so
the same model runs in float or on the macro.

Adapters on a projection with frozen base weight W0 (d x k, output x input),
input x and bias b:

* LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
  ICLR 2022): ``y = x W0^T + b + (alpha / r) (x A^T) B^T`` with trainable
  A (r x k) and B (d x r); B starts at zero so the model starts unchanged.
* LoRAFusion (docs/architecture.md, "Workloads"): a pool of N trained LoRA adapters
  (A_i, B_i) is deployed once and frozen. Per new task only fusion
  coefficients w (N values per transformer block, shared by that block's
  adapted linears) and a magnitude vector m (d values per adapted linear) are
  trained. With ``A_l = sum_i w_i A_i``, ``B_l = sum_i w_i B_i`` and
  ``dW = (alpha / r) B_l A_l``, the adapted weight is, in the weight
  decomposition of DoRA (Liu et al., "DoRA: Weight-Decomposed Low-Rank
  Adaptation", ICML 2024), ``W' = m * (W0 + dW) / ||W0 + dW||`` with the norm
  taken per output unit (each row of the d x k weight; each column of the
  k x d matrix the macro stores).

Closed forms for the trainable parameters (adapters only, heads excluded):
LoRA trains ``r (d_in + d_out)`` values per adapted linear; LoRAFusion trains
``N`` per block plus ``d_out`` per adapted linear.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imcsim.workloads.int8 import IMCLinear

LoRAState = dict[str, tuple[torch.Tensor, torch.Tensor]]  # adapted projection name -> (A (r x k), B (d x r))


# --------------------------------------------------------------------------------------------------
# model


def _rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a linear layer to the rows of ``x`` (..., K) as one 2-D GEMM (the macro takes M x K operands)."""
    y = layer(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


class Attention(nn.Module):
    """Multi-head attention ``softmax(Q K^T / sqrt(dh)) V`` with IMC projections ``{name}.q/k/v/o``."""

    def __init__(self, d_model: int, n_heads: int, name: str, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"{name}: d_model={d_model} not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.q = IMCLinear(d_model, d_model, name=f"{name}.q", bias=bias)
        self.k = IMCLinear(d_model, d_model, name=f"{name}.k", bias=bias)
        self.v = IMCLinear(d_model, d_model, name=f"{name}.v", bias=bias)
        self.o = IMCLinear(d_model, d_model, name=f"{name}.o", bias=bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, heads, N, dh)."""
        b, n, d = t.shape
        return t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, N, dh)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Attend from ``x`` (B, N, D) to ``context`` (B, M, D; ``x`` itself when None)."""
        ctx = x if context is None else context
        q = self._split(_rows(self.q, x))
        k = self._split(_rows(self.k, ctx))
        v = self._split(_rows(self.v, ctx))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if causal:
            n, m = scores.shape[-2:]
            mask = torch.ones(n, m, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        out = scores.softmax(dim=-1) @ v  # (B, H, N, dh)
        b, _, n, _ = out.shape
        return _rows(self.o, out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """Two IMC linears ``{name}.1`` (D -> d_ff) and ``{name}.2`` (d_ff -> D) with GELU between; ``gated``
    (T5 v1.1's gated GELU, Shazeer, "GLU Variants Improve Transformer", 2020) multiplies the GELU by a
    third linear ``{name}.gate`` (D -> d_ff)."""

    def __init__(self, d_model: int, d_ff: int, name: str, gated: bool = False, bias: bool = True):
        super().__init__()
        self.fc1 = IMCLinear(d_model, d_ff, name=f"{name}.1", bias=bias)
        self.gate = IMCLinear(d_model, d_ff, name=f"{name}.gate", bias=bias) if gated else None
        self.fc2 = IMCLinear(d_ff, d_model, name=f"{name}.2", bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fc2(gelu(fc1(x)) [* gate(x)])`` over the last dimension."""
        h = F.gelu(_rows(self.fc1, x))
        if self.gate is not None:
            h = h * _rows(self.gate, x)
        return _rows(self.fc2, h)


def _norm(kind: str, d: int) -> nn.Module:
    """LayerNorm, or RMS norm (a scale, no shift: T5's)."""
    return nn.RMSNorm(d, eps=1e-6) if kind == "rms" else nn.LayerNorm(d)


class EncoderBlock(nn.Module):
    """Pre-LN encoder block: ``x + attn(LN(x))``, then ``x + ff(LN(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, name: str, gated: bool = False, norm: str = "layer",
                 bias: bool = True):
        super().__init__()
        self.name = name
        self.ln1 = _norm(norm, d_model)
        self.attn = Attention(d_model, n_heads, f"{name}.attn", bias)
        self.ln2 = _norm(norm, d_model)
        self.ff = FeedForward(d_model, d_ff, f"{name}.ff", gated, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.attn(self.ln1(x))
        return x + self.ff(self.ln2(x))


class DecoderBlock(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention to the encoder output, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, name: str, gated: bool = False, norm: str = "layer",
                 bias: bool = True):
        super().__init__()
        self.name = name
        self.ln1 = _norm(norm, d_model)
        self.self_attn = Attention(d_model, n_heads, f"{name}.self", bias)
        self.ln2 = _norm(norm, d_model)
        self.cross = Attention(d_model, n_heads, f"{name}.cross", bias)
        self.ln3 = _norm(norm, d_model)
        self.ff = FeedForward(d_model, d_ff, f"{name}.ff", gated, bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Decoder states ``x`` (B, N, D) attending to the encoder output ``memory`` (B, M, D)."""
        x = x + self.self_attn(self.ln1(x), causal=True)
        x = x + self.cross(self.ln2(x), context=memory)
        return x + self.ff(self.ln3(x))


class TinyTransformer(nn.Module):
    """A small pre-LN transformer classifier with one head per task.

    Tokens (B, N) -> token + position embeddings -> ``n_layers`` encoder blocks
    (``enc.{i}``) -> final LayerNorm. With ``decoder_layers`` > 0 the decoder
    (``dec.{i}``) reads the same tokens (or ``dec_tokens``) with causal
    self-attention and cross-attends to the encoder output. The last stack's
    output is mean-pooled over positions and fed to the task's head
    ``head.{task}``. The constructor adds the head of task ``"base"`` with
    ``n_classes`` classes.
    """

    def __init__(self, vocab: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, max_len: int,
                 n_classes: int, decoder_layers: int = 0, gated: bool = False, norm: str = "layer", bias: bool = True,
                 position: str = "learned"):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.n_classes = n_classes
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model) if position == "learned" else None
        style = {"gated": gated, "norm": norm, "bias": bias}
        self.enc = nn.ModuleList([EncoderBlock(d_model, n_heads, d_ff, f"enc.{i}", **style) for i in range(n_layers)])
        self.enc_norm = _norm(norm, d_model)
        self.dec = nn.ModuleList([DecoderBlock(d_model, n_heads, d_ff, f"dec.{i}", **style)
                                  for i in range(decoder_layers)])
        self.dec_norm = _norm(norm, d_model) if decoder_layers else None
        self.heads = nn.ModuleDict()
        self.add_head("base", n_classes)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features the heads read."""
        return self.d_model

    def add_head(self, task: str, n_classes: int | None = None) -> IMCLinear:
        """Add task ``task``'s linear head (``n_classes`` defaults to the constructor's)."""
        head = IMCLinear(self.d_model, self.n_classes if n_classes is None else n_classes, name=f"head.{task}")
        self.heads[task] = head
        return head

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters a step on ``task`` uses: all but the other tasks' heads."""
        other = {id(p) for name, h in self.heads.items() if name != task for p in h.parameters()}
        return [p for p in self.parameters() if id(p) not in other]

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, encoder first (each has a unique ``name``: ``enc.{i}`` / ``dec.{i}``)."""
        return [*self.enc, *self.dec]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings (B, N, D) of token ids (B, N)."""
        n = tokens.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.max_len}")
        if self.pos is None:
            return self.tok(tokens)
        pos = torch.arange(n, device=tokens.device)
        return self.tok(tokens) + self.pos(pos)

    def features(self, tokens: torch.Tensor, dec_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Mean-pooled output (B, D) of the last stack (the decoder when there is one)."""
        h = self.embed(tokens)
        for block in self.enc:
            h = block(h)
        h = self.enc_norm(h)
        if len(self.dec):
            memory = h
            h = self.embed(tokens if dec_tokens is None else dec_tokens)
            for block in self.dec:
                h = block(h, memory)
            h = self.dec_norm(h)
        return h.mean(dim=1)

    def forward(self, tokens: torch.Tensor, task: str = "base", dec_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, n_classes of ``task``) for token ids ``tokens`` (B, N)."""
        return self.heads[task](self.features(tokens, dec_tokens))


# --------------------------------------------------------------------------------------------------
# adapters


class LoRALinear(nn.Module):
    """``y = base(x) + (alpha / r) * lora_B(lora_A(x))``; A Kaiming-uniform, B zero (starts as the base)."""

    def __init__(self, base: IMCLinear, rank: int, alpha: float | None = None):
        super().__init__()
        d, k = base.weight.shape
        self.name = base.name
        self.base = base
        self.rank = rank
        self.scale = (rank if alpha is None else alpha) / rank
        self.lora_A = IMCLinear(k, rank, name=f"{base.name}.lora_A", bias=False)  # Kaiming-uniform init
        self.lora_B = IMCLinear(rank, d, name=f"{base.name}.lora_B", bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the scaled low-rank update."""
        return self.base(x) + self.scale * self.lora_B(self.lora_A(x))

    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached copies of (A (r x k), B (d x r))."""
        return self.lora_A.weight.detach().clone(), self.lora_B.weight.detach().clone()


class FusionCoefficients(nn.Module):
    """The N fusion coefficients ``w`` of one transformer block (shared by its adapted linears; created at 0,
    set per task by :func:`init_fusion_coefficients`)."""

    def __init__(self, pool_size: int, block: str):
        super().__init__()
        self.block = block
        self.w = nn.Parameter(torch.zeros(pool_size))


def init_fusion_coefficients(model: nn.Module, init: str = "xavier_uniform",
                             generator: torch.Generator | None = None) -> None:
    """Set every block's coefficients as a task starts: ``xavier_uniform`` draws the pool_size x blocks matrix from
    U(-b, b), b = sqrt(6 / (pool_size + blocks)), as the reference implementation does; ``zero`` zeroes them."""
    coefs = fusion_coefficients(model)
    with torch.no_grad():
        for c in coefs:
            if init == "zero":
                c.w.zero_()
            else:
                bound = math.sqrt(6.0 / (c.w.numel() + len(coefs)))
                c.w.copy_(torch.rand(c.w.shape, generator=generator, dtype=c.w.dtype) * (2 * bound) - bound)


class PoolAdapter(nn.Module):
    """One frozen pool adapter of a projection: ``A`` (k -> r) and ``B`` (r -> d) as IMC linears."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, name: str):
        super().__init__()
        r, k = a.shape
        d = b.shape[0]
        self.A = IMCLinear(k, r, name=f"{name}.A", bias=False)
        self.B = IMCLinear(r, d, name=f"{name}.B", bias=False)
        with torch.no_grad():
            self.A.weight.copy_(a)
            self.B.weight.copy_(b)
        self.requires_grad_(False)


class LoRAFusionLinear(nn.Module):
    """A projection adapted by LoRAFusion: ``x W'^T + b`` with ``W' = m * (W0 + dW) / ||W0 + dW||``.

    ``dW = (alpha / r) (sum_i w_i B_i)(sum_i w_i A_i)``; the norm is taken per
    output unit, i.e. over each row of the d x k weight ``W0 + dW`` (DoRA-style),
    and ``m`` (d values) starts at the row norms of W0, so with ``w = 0`` the
    layer equals the base. The forward pass runs the GEMMs through the frozen
    pool modules (``u = sum_i w_i A_i(x)``, then ``sum_i w_i B_i(u)``) and the
    base, and rescales the sum by ``m / ||W0 + dW||`` computed explicitly from
    the pool weights; with ``detach_norm`` (PEFT's DoRA) the norm is a constant
    in the backward pass, otherwise gradients flow through it too.

    The coefficient gradient (``merged_backward``, the reference's formulation):
    the pool outputs are combined with the coefficients held constant, and a
    term of value zero, ``x (sum_i (w_i - sg(w_i)) A_i)^T`` (and the same for B
    on ``u``), carries dL/dw_i = <dL/dA_l, A_i> + <dL/dB_l, B_i>: the backward
    keeps x and u, as one LoRA does, not every pool output. The input gradient
    still runs through the pool modules (their crossbars), as in the forward pass.

    ``layout``: ``separate`` stores each pool adapter's A and B as matrices of
    their own (``{name}.pool{i}.A/B``); ``stacked`` stores [A_1; ...; A_N] (N r x k)
    and [B_1 ... B_N] (d x N r) once (``{name}.pool.A/B``): one pass gives every
    A_i x, and driving the stacked B with [w_1 u; ...; w_N u] sums the fused
    update sum_i w_i B_i u in the array in one pass.
    """

    detach_norm = True
    merged_backward = True

    def __init__(self, base: IMCLinear, adapters: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 coefficients: FusionCoefficients, alpha: float | None = None, layout: str = "separate"):
        super().__init__()
        d, k = base.weight.shape
        rank = adapters[0][0].shape[0]
        for i, (a, b) in enumerate(adapters):
            if tuple(a.shape) != (rank, k) or tuple(b.shape) != (d, rank):
                raise ValueError(f"{base.name}: pool adapter {i} has A {tuple(a.shape)}, B {tuple(b.shape)}; "
                                 f"expected A {(rank, k)}, B {(d, rank)}")
        if len(adapters) != coefficients.w.numel():
            raise ValueError(f"{base.name}: {len(adapters)} pool adapters but {coefficients.w.numel()} coefficients")
        self.name = base.name
        self.base = base
        self.rank = rank
        self.scale = (rank if alpha is None else alpha) / rank
        if layout not in ("separate", "stacked"):
            raise ValueError(f"{base.name}: layout must be separate or stacked (got {layout!r})")
        self.stacked = layout == "stacked"
        self.pool_size = len(adapters)
        if self.stacked:
            self.pool = nn.ModuleList([PoolAdapter(torch.cat([a.detach() for a, _ in adapters]),
                                                   torch.cat([b.detach() for _, b in adapters], dim=1),
                                                   f"{base.name}.pool")])
        else:
            self.pool = nn.ModuleList(
                [PoolAdapter(a.detach(), b.detach(), f"{base.name}.pool{i}") for i, (a, b) in enumerate(adapters)])
        self.coef = coefficients
        self.magnitude = nn.Parameter(base.weight.detach().norm(dim=1).clone())

    def merged(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A_l = sum_i w_i A_i`` (r x k) and ``B_l = sum_i w_i B_i`` (d x r) for coefficients ``w``, from the
        pool modules' weights (each product takes the weight first: a weight, not an activation, to the traces)."""
        if not self.stacked:
            return (sum(p.A.weight * w[i] for i, p in enumerate(self.pool)),
                    sum(p.B.weight * w[i] for i, p in enumerate(self.pool)))
        st, per = self.pool[0], w.repeat_interleave(self.rank)
        return ((st.A.weight * per[:, None]).unflatten(0, (self.pool_size, self.rank)).sum(0),
                (st.B.weight * per[None, :]).unflatten(1, (self.pool_size, self.rank)).sum(1))

    def delta_weight(self) -> torch.Tensor:
        """``dW = (alpha / r) B_l A_l`` (d x k) from the pool and the current coefficients."""
        a_l, b_l = self.merged(self.coef.w)
        return self.scale * (b_l @ a_l)

    def _pool_a(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``u = sum_i w_i A_i(x)`` through the pool modules: each adapter's own A, or the stacked A (one pass
        gives every A_i x)."""
        if not self.stacked:
            return sum(w[i] * p.A(x) for i, p in enumerate(self.pool))
        return (self.pool[0].A(x).unflatten(-1, (self.pool_size, self.rank)) * w[:, None]).sum(-2)

    def _pool_b(self, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``sum_i w_i B_i(u)`` through the pool modules: each adapter's own B, or the stacked B driven by
        [w_1 u; ...; w_N u] (the sum formed in the array)."""
        if not self.stacked:
            return sum(w[i] * p.B(u) for i, p in enumerate(self.pool))
        return self.pool[0].B((u.unsqueeze(-2) * w[:, None]).flatten(-2))

    def row_norms(self) -> torch.Tensor:
        """``||W0 + dW||`` per output unit (d values)."""
        return (self.base.weight + self.delta_weight()).norm(dim=1)

    def fused_weight(self) -> torch.Tensor:
        """The adapted weight ``W'`` (d x k) computed explicitly."""
        merged = self.base.weight + self.delta_weight()
        return (self.magnitude / merged.norm(dim=1)).unsqueeze(1) * merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W'^T + b``, with the GEMMs on the base and the pool modules."""
        w = self.coef.w
        if self.merged_backward:
            held, live = w.detach(), w - w.detach()  # live: zero, carrying the coefficients' gradient
            a_live, b_live = self.merged(live)
            u = self._pool_a(x, held) + F.linear(x.detach(), a_live)
            delta = self._pool_b(u, held) + F.linear(u.detach(), b_live)
        else:
            u = self._pool_a(x, w)
            delta = self._pool_b(u, w)
        bias = self.base.bias
        y = self.base(x)
        if bias is not None:
            y = y - bias
        norms = self.row_norms()
        y = (y + self.scale * delta) * (self.magnitude / (norms.detach() if self.detach_norm else norms))
        return y + bias if bias is not None else y


def fused_weight(layer: LoRAFusionLinear) -> torch.Tensor:
    """The adapted weight ``W' = m * (W0 + dW) / ||W0 + dW||`` (norm per output row) of a LoRAFusion layer."""
    return layer.fused_weight()


def _targeted(model: nn.Module, targets: Iterable[str]) -> list[tuple[nn.Module, nn.Module, str, IMCLinear]]:
    """(block, parent module, attribute, projection) for every projection named ``{target}`` or ``*.{target}``."""
    if not hasattr(model, "blocks"):
        raise TypeError("the model must list its transformer blocks with a blocks() method")
    targets = tuple(targets)
    suffixes = tuple(f".{t}" for t in targets if "*" not in t)
    globs = tuple(t for t in targets if "*" in t)
    found = []
    for block in model.blocks():
        for path, mod in block.named_modules():
            if isinstance(mod, (LoRALinear, LoRAFusionLinear)):
                raise ValueError(f"{mod.name} already carries an adapter")
            if not isinstance(mod, IMCLinear) or not (mod.name in targets or mod.name.endswith(suffixes)
                                                      or any(fnmatch.fnmatchcase(mod.name, g) for g in globs)):
                continue
            parent_path, _, attr = path.rpartition(".")
            found.append((block, block.get_submodule(parent_path), attr, mod))
    if not found:
        raise ValueError(f"no projection matches targets {tuple(targets)}")
    return found


def attach_lora(model: nn.Module, targets: Sequence[str] = ("q", "v"), rank: int = 4,
                alpha: float | None = None) -> list[LoRALinear]:
    """Wrap the targeted projections with LoRA; return the wrappers.

    A projection is targeted when its name is a target or ends in ``.{target}``
    (``"q"`` picks every ``*.q``; ``"ff.1"`` or a full name works too).

    Every parameter the model holds before the call is frozen (heads included;
    a head added afterwards is trainable); only the adapters' A and B train.
    ``alpha`` defaults to ``rank`` (scale 1).
    """
    found = _targeted(model, targets)
    model.requires_grad_(False)
    wrappers = []
    for _block, parent, attr, proj in found:
        wrapper = LoRALinear(proj, rank, alpha)
        setattr(parent, attr, wrapper)
        wrappers.append(wrapper)
    return wrappers


def lora_state(model: nn.Module) -> LoRAState:
    """Detached copies of every LoRA adapter of ``model``: projection name -> (A, B)."""
    return {m.name: m.state() for m in model.modules() if isinstance(m, LoRALinear)}


def lora_pool_from(models_or_states: Iterable[nn.Module | Mapping[str, tuple[torch.Tensor, torch.Tensor]]]
                   ) -> list[LoRAState]:
    """A LoRAFusion pool from N trained LoRA adapters (models carrying LoRA, or their :func:`lora_state`)."""
    pool: list[LoRAState] = []
    for item in models_or_states:
        if isinstance(item, nn.Module):
            state = lora_state(item)
        else:
            state = {name: (a.detach().clone(), b.detach().clone()) for name, (a, b) in item.items()}
        if not state:
            raise ValueError(f"pool member {len(pool)} holds no LoRA adapter")
        pool.append(state)
    if not pool:
        raise ValueError("empty LoRA pool")
    return pool


def attach_lorafusion(model: nn.Module, pool: Sequence[Mapping[str, tuple[torch.Tensor, torch.Tensor]]],
                      targets: Sequence[str] = ("q", "v"), rank: int | None = None,
                      alpha: float | None = None, layout: str = "separate") -> list[LoRAFusionLinear]:
    """Wrap the targeted projections with LoRAFusion over ``pool``; return the wrappers.

    ``pool[i][name]`` is adapter i's (A, B) for projection ``name``. Each block
    with an adapted projection gets one :class:`FusionCoefficients` (N zeros)
    shared by its adapted linears. Every parameter the model holds before the
    call is frozen, and so is the pool; only the coefficients and magnitudes
    train. ``alpha`` (default ``rank``) must match the one the pool was trained with.
    """
    if not pool:
        raise ValueError("empty LoRA pool")
    found = _targeted(model, targets)
    model.requires_grad_(False)
    coefficients: dict[int, FusionCoefficients] = {}
    wrappers = []
    for block, parent, attr, proj in found:
        try:
            adapters = [member[proj.name] for member in pool]
        except KeyError as err:
            raise KeyError(f"a pool adapter lacks projection {proj.name}") from err
        if rank is not None and any(a.shape[0] != rank for a, _ in adapters):
            raise ValueError(f"{proj.name}: pool rank differs from rank={rank}")
        if id(block) not in coefficients:
            coefficients[id(block)] = FusionCoefficients(len(pool), getattr(block, "name", ""))
        wrapper = LoRAFusionLinear(proj, adapters, coefficients[id(block)], alpha, layout)
        setattr(parent, attr, wrapper)
        wrappers.append(wrapper)
    return wrappers


def fusion_coefficients(model: nn.Module) -> list[FusionCoefficients]:
    """The distinct per-block fusion coefficient modules of a LoRAFusion model."""
    seen: dict[int, FusionCoefficients] = {}
    for m in model.modules():
        if isinstance(m, LoRAFusionLinear):
            seen.setdefault(id(m.coef), m.coef)
    return list(seen.values())


# --------------------------------------------------------------------------------------------------
# parameter counts


def lora_trainable_params(model: nn.Module) -> int:
    """Trainable values in the model's LoRA adapters (A and B of every :class:`LoRALinear`)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, LoRALinear)
               for p in (m.lora_A.weight, m.lora_B.weight) if p.requires_grad)


def lorafusion_trainable_params(model: nn.Module) -> int:
    """Trainable values of LoRAFusion: distinct fusion coefficients plus the magnitude vectors."""
    params: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, LoRAFusionLinear):
            for p in (m.coef.w, m.magnitude):
                if p.requires_grad:
                    params[id(p)] = p
    return sum(p.numel() for p in params.values())


def lora_params_formula(d_in: int, d_out: int, r: int, n_adapted: int) -> int:
    """LoRA's trainable values: ``n_adapted * r * (d_in + d_out)`` for ``n_adapted`` d_in -> d_out linears."""
    return n_adapted * r * (d_in + d_out)


def lorafusion_params_formula(n_blocks: int, pool_size: int, adapted_out_dims: Iterable[int]) -> int:
    """LoRAFusion's trainable values: ``n_blocks * N`` coefficients plus ``d_out`` magnitudes per adapted linear."""
    return n_blocks * pool_size + sum(adapted_out_dims)
