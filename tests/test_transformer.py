"""Tiny transformer, LoRA and LoRAFusion adapters: shapes, parameter counts, exactness, gradients, learning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from imcsim.workloads.int8 import IMCLinear, imc_modules
from imcsim.workloads.transformer import (
    Attention,
    LoRAFusionLinear,
    LoRALinear,
    TinyTransformer,
    attach_lora,
    attach_lorafusion,
    fused_weight,
    fusion_coefficients,
    lora_params_formula,
    lora_pool_from,
    lora_state,
    lora_trainable_params,
    lorafusion_params_formula,
    lorafusion_trainable_params,
)

VOCAB, D, HEADS, LAYERS, DFF, MAXLEN, CLASSES = 11, 16, 4, 2, 32, 12, 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny GEMMs run fastest on one thread (thread start-up and contention dominate otherwise)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(decoder_layers: int = 0, seed: int = 0) -> TinyTransformer:
    torch.manual_seed(seed)
    return TinyTransformer(VOCAB, D, HEADS, LAYERS, DFF, MAXLEN, CLASSES, decoder_layers=decoder_layers)


def _tokens(b: int = 5, n: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, n), generator=torch.Generator().manual_seed(seed))


def _random_pool(model: TinyTransformer, size: int, rank: int, targets=("q", "v")) -> list:
    """``size`` LoRA states with random A and B for the model's targeted projections."""
    probe = copy.deepcopy(model)
    wrappers = attach_lora(probe, targets, rank)
    g = torch.Generator().manual_seed(7)
    pool = []
    for _ in range(size):
        state = {}
        for w in wrappers:
            d, k = w.base.weight.shape
            state[w.name] = (torch.randn(rank, k, generator=g) * 0.3, torch.randn(d, rank, generator=g) * 0.3)
        pool.append(state)
    return pool


@pytest.mark.parametrize("decoder_layers", [0, 2])
def test_model_runs_and_shapes(decoder_layers):
    model = _model(decoder_layers)
    x = _tokens()
    assert model(x).shape == (5, CLASSES)
    model.add_head("other", 7)
    assert model(x, "other").shape == (5, 7)
    assert model.features(x).shape == (5, D)
    names = [m.name for m in imc_modules(model)]
    assert len(names) == len(set(names))
    assert {"enc.0.attn.q", "enc.1.attn.v", "enc.0.ff.1", "enc.1.ff.2", "head.base", "head.other"} <= set(names)
    if decoder_layers:
        assert {"dec.0.self.q", "dec.1.cross.k", "dec.1.cross.v", "dec.0.ff.2"} <= set(names)
        assert model(x, dec_tokens=_tokens(5, 4, seed=3)).shape == (5, CLASSES)
    else:
        assert not any(n.startswith("dec.") for n in names)
    with pytest.raises(ValueError, match="max_len"):
        model(_tokens(2, MAXLEN + 1))


def test_model_is_deterministic_given_the_seed():
    x = _tokens()
    torch.testing.assert_close(_model(1, seed=3)(x), _model(1, seed=3)(x), rtol=0, atol=0)
    assert not torch.equal(_model(1, seed=3)(x), _model(1, seed=4)(x))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_scaled_dot_product_attention(causal):
    torch.manual_seed(4)
    attn = Attention(D, HEADS, "a")
    x = torch.randn(3, 7, D)
    ctx = x if causal else torch.randn(3, 5, D)

    def heads(t):
        return t.view(t.shape[0], t.shape[1], HEADS, D // HEADS).transpose(1, 2)

    q, k, v = heads(attn.q(x)), heads(attn.k(ctx)), heads(attn.v(ctx))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(3, 7, D)
    got = attn(x, causal=True) if causal else attn(x, context=ctx)
    torch.testing.assert_close(got, attn.o(ref))


def test_decoder_self_attention_is_causal():
    model = _model(1)
    model.eval()
    x = _tokens(2, 8)
    dec = _tokens(2, 6, seed=5)
    h1 = model.embed(dec)
    memory = model.enc_norm(model.enc[1](model.enc[0](model.embed(x))))
    out1 = model.dec[0](h1, memory)
    dec2 = dec.clone()
    dec2[:, -1] = (dec2[:, -1] + 1) % VOCAB  # change only the last position
    out2 = model.dec[0](model.embed(dec2), memory)
    torch.testing.assert_close(out1[:, :-1], out2[:, :-1])
    assert not torch.allclose(out1[:, -1], out2[:, -1])


@pytest.mark.parametrize("decoder_layers", [0, 1])
def test_trainable_counts_match_the_formulas(decoder_layers):
    rank, pool_size = 3, 4
    lora = _model(decoder_layers)
    wrappers = attach_lora(lora, ("q", "v"), rank)
    # q and v in every encoder block; self q, v and cross q, v in every decoder block
    n_adapted = 2 * LAYERS + 4 * decoder_layers
    assert len(wrappers) == n_adapted
    expected = lora_params_formula(D, D, rank, n_adapted)
    assert expected == n_adapted * rank * 2 * D
    assert lora_trainable_params(lora) == expected
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == expected

    fusion = _model(decoder_layers)
    pool = _random_pool(fusion, pool_size, rank)
    fw = attach_lorafusion(fusion, pool, ("q", "v"), rank=rank)
    n_blocks = LAYERS + decoder_layers
    expected = lorafusion_params_formula(n_blocks, pool_size, [w.base.weight.shape[0] for w in fw])
    assert expected == n_blocks * pool_size + n_adapted * D
    assert len(fusion_coefficients(fusion)) == n_blocks
    assert lorafusion_trainable_params(fusion) == expected
    assert sum(p.numel() for p in fusion.parameters() if p.requires_grad) == expected


def test_lora_starts_as_the_base_and_freezes_it():
    base = _model(1)
    x = _tokens()
    ref = base(x).detach()
    model = copy.deepcopy(base)
    wrappers = attach_lora(model, ("q", "v"), rank=4, alpha=8)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    for w in wrappers:
        assert isinstance(w, LoRALinear)
        assert not w.base.weight.requires_grad
        assert not w.base.bias.requires_grad
        assert w.lora_A.weight.requires_grad
        assert w.lora_B.weight.requires_grad
        assert torch.count_nonzero(w.lora_B.weight) == 0
        assert torch.count_nonzero(w.lora_A.weight) == w.lora_A.weight.numel()
        assert w.lora_A.weight.shape == (4, D)
        assert w.lora_B.weight.shape == (D, 4)
        assert w.scale == 2.0
    names = {m.name for m in imc_modules(model)}
    assert {"enc.0.attn.q.lora_A", "enc.0.attn.q.lora_B", "dec.0.cross.v.lora_B"} <= names
    assert "enc.0.attn.k.lora_A" not in names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * len(wrappers)
    assert all(".lora_" in n for n in trainable)
    with pytest.raises(ValueError, match="already"):
        attach_lora(model, ("q",), rank=2)


def test_lora_forward_formula():
    model = _model()
    (w,) = attach_lora(model, ("enc.0.attn.q",), rank=2, alpha=6)
    with torch.no_grad():
        w.lora_B.weight.normal_()
    x = torch.randn(4, D)
    W0, b = w.base.weight, w.base.bias
    A, B = w.lora_A.weight, w.lora_B.weight
    torch.testing.assert_close(w(x), x @ W0.T + b + 3.0 * (x @ A.T) @ B.T)


def test_lorafusion_starts_as_the_base():
    base = _model(1)
    x = _tokens()
    ref = base(x).detach()
    model = copy.deepcopy(base)
    attach_lorafusion(model, _random_pool(base, 3, 2), ("q", "v"))
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)


def test_lorafusion_layer_equals_its_fused_weight():
    base = _model(1)
    rank, alpha = 2, 5.0
    pool = _random_pool(base, 3, rank)
    model = copy.deepcopy(base)
    wrappers = attach_lorafusion(model, pool, ("q", "v"), rank=rank, alpha=alpha)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for c in fusion_coefficients(model):
            c.w.copy_(torch.randn(c.w.shape, generator=g))
        for w in wrappers:
            w.magnitude.mul_(1 + 0.5 * torch.rand(w.magnitude.shape, generator=g))
    x = torch.randn(6, 5, D, generator=g)
    for w in wrappers:
        assert isinstance(w, LoRAFusionLinear)
        wp = fused_weight(w)
        torch.testing.assert_close(w(x), x @ wp.T + w.base.bias, rtol=0, atol=1e-5)
        # the fused weight by hand: DoRA-style, norm per output row of the d x k weight
        coef = w.coef.w
        a_l = sum(coef[i] * pool[i][w.name][0] for i in range(3))
        b_l = sum(coef[i] * pool[i][w.name][1] for i in range(3))
        merged = w.base.weight + alpha / rank * b_l @ a_l
        expected = w.magnitude[:, None] * merged / merged.norm(dim=1, keepdim=True)
        torch.testing.assert_close(wp, expected)
        assert not torch.allclose(wp, w.base.weight, atol=1e-3)  # the coefficients really changed it
    assert not torch.allclose(model(_tokens()), base(_tokens()), atol=1e-3)


def test_lorafusion_pool_modules_and_shared_coefficients():
    base = _model(1)
    model = copy.deepcopy(base)
    wrappers = attach_lorafusion(model, _random_pool(base, 2, 3), ("q", "v"))
    names = {m.name for m in imc_modules(model)}
    assert {"enc.0.attn.q.pool0.A", "enc.0.attn.q.pool1.B", "dec.0.cross.v.pool1.A"} <= names
    by_block = {}
    for w in wrappers:
        block = ".".join(w.name.split(".")[:2])  # enc.{i} / dec.{i}
        by_block.setdefault(block, set()).add(id(w.coef))
        assert w.coef.block == block
    assert set(by_block) == {"enc.0", "enc.1", "dec.0"}
    assert all(len(ids) == 1 for ids in by_block.values())  # one coefficient vector per block
    assert len({id(w.coef) for w in wrappers}) == 3  # enc.0, enc.1, dec.0
    dec = [w for w in wrappers if w.name.startswith("dec.0")]
    assert len(dec) == 4
    assert len({id(w.coef) for w in dec}) == 1  # self and cross attention share it
    for w in wrappers:
        torch.testing.assert_close(w.magnitude, w.base.weight.norm(dim=1))


def test_lorafusion_gradients_reach_only_coefficients_and_magnitudes():
    base = _model(1)
    model = copy.deepcopy(base)
    wrappers = attach_lorafusion(model, _random_pool(base, 3, 2), ("q", "v"))
    with torch.no_grad():  # away from w = 0 so every path carries a gradient
        for c in fusion_coefficients(model):
            c.w.fill_(0.2)
    x = _tokens()
    y = torch.randint(0, CLASSES, (5,), generator=torch.Generator().manual_seed(2))
    F.cross_entropy(model(x), y).backward()
    allowed = {id(c.w) for c in fusion_coefficients(model)} | {id(w.magnitude) for w in wrappers}
    for name, p in model.named_parameters():
        if id(p) in allowed:
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad, name
            assert p.grad is None, name
    for m in model.modules():
        if isinstance(m, IMCLinear):
            assert not m.weight.requires_grad, m.name  # base, pool and heads all frozen


def test_lora_pool_from_models_and_states():
    base = _model()
    adapted = []
    for seed in range(3):
        m = copy.deepcopy(base)
        for w in attach_lora(m, ("q", "v"), rank=2):
            with torch.no_grad():
                w.lora_B.weight.normal_(generator=torch.Generator().manual_seed(seed))
        adapted.append(m)
    pool = lora_pool_from(adapted)
    assert len(pool) == 3
    assert set(pool[0]) == {"enc.0.attn.q", "enc.0.attn.v", "enc.1.attn.q", "enc.1.attn.v"}
    a, b = pool[1]["enc.1.attn.v"]
    assert a.shape == (2, D)
    assert b.shape == (D, 2)
    assert not a.requires_grad
    torch.testing.assert_close(b, adapted[1].enc[1].attn.v.lora_B.weight.detach())
    again = lora_pool_from([lora_state(m) for m in adapted])
    torch.testing.assert_close(again[2]["enc.0.attn.q"][1], pool[2]["enc.0.attn.q"][1])
    # with w set to pick one adapter, LoRAFusion's delta equals that LoRA's (magnitude aside)
    fusion = copy.deepcopy(base)
    fw = attach_lorafusion(fusion, pool, ("q", "v"))
    with torch.no_grad():
        for c in fusion_coefficients(fusion):
            c.w.copy_(torch.tensor([0.0, 1.0, 0.0]))
    lora_v = adapted[1].enc[1].attn.v
    torch.testing.assert_close(
        fw[3].delta_weight(), lora_v.scale * lora_v.lora_B.weight @ lora_v.lora_A.weight
    )
    with pytest.raises(KeyError):
        attach_lorafusion(copy.deepcopy(base), pool, ("q", "k"))


def _count_task(n: int, g: torch.Generator, vocab: int = 8, length: int = 16):
    """Sequences labelled 1 when token 1 occurs more often than token 2."""
    x = torch.randint(0, vocab, (n, length), generator=g)
    return x, ((x == 1).sum(1) > (x == 2).sum(1)).long()


def test_lora_training_lowers_the_loss():
    torch.manual_seed(0)
    model = TinyTransformer(8, 32, 4, 2, 64, 16, 2)
    before = [(p, p.detach().clone()) for p in model.parameters()]  # the wrappers keep these parameters
    attach_lora(model, ("q", "v"), rank=4)  # the head is frozen too: only the adapters learn
    params = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in params) == lora_params_formula(32, 32, 4, 4)
    opt = torch.optim.Adam(params, lr=1e-2)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(200):
        x, y = _count_task(32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    x, y = _count_task(512, torch.Generator().manual_seed(99))
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.85
    for p, value in before:  # the base (head included) is untouched
        torch.testing.assert_close(p.detach(), value, rtol=0, atol=0)


@pytest.mark.parametrize(("detach", "merged", "layout"), [(True, True, "separate"), (False, True, "separate"),
                                                          (True, False, "separate"), (True, True, "stacked"),
                                                          (False, False, "stacked")])
def test_lorafusion_coefficient_gradient_is_the_merged_adapters_formula(detach, merged, layout):
    """The coefficient gradient through the pool modules equals the reference formulation's, written by hand:
    dL/dw_i = <dL/dA_l, A_i> + <dL/dB_l, B_i> with A_l = sum w_i A_i and B_l = sum w_i B_i taken as free tensors
    (the norm a constant when detached, as PEFT's DoRA holds it, or differentiated), whether the backward runs
    through the merged adapters or through every pool output, with the pool stored adapter by adapter or
    stacked."""
    base = _model(1)
    pool = _random_pool(base, 3, 2)
    model = copy.deepcopy(base)
    wrappers = attach_lorafusion(model, pool, ("q",), rank=2, alpha=3.0, layout=layout)
    layer = wrappers[0]
    layer.detach_norm, layer.merged_backward = detach, merged
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        layer.coef.w.copy_(torch.randn(3, generator=g))
        layer.magnitude.mul_(1 + torch.rand(layer.magnitude.shape, generator=g))
    x = torch.randn(7, D, generator=g)
    target = torch.randn(7, D, generator=g)
    x.requires_grad_(True)
    ((layer(x) - target) ** 2).sum().backward()
    got, got_x = layer.coef.w.grad.clone(), x.grad.clone()
    x = x.detach()

    w = layer.coef.w.detach()
    a_i = [pool[i][layer.name][0] for i in range(3)]
    b_i = [pool[i][layer.name][1] for i in range(3)]
    a_l = sum(w[i] * a_i[i] for i in range(3)).requires_grad_(True)
    b_l = sum(w[i] * b_i[i] for i in range(3)).requires_grad_(True)
    merged = layer.base.weight.detach() + layer.scale * b_l @ a_l
    norms = merged.norm(dim=1)
    scale = layer.magnitude.detach() / (norms.detach() if detach else norms)
    y = (x @ merged.T) * scale + layer.base.bias.detach()
    ((y - target) ** 2).sum().backward()
    want = torch.stack([(a_l.grad * a_i[i]).sum() + (b_l.grad * b_i[i]).sum() for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    x.requires_grad_(True)  # the input gradient is the same either way
    y = (x @ merged.detach().T) * scale.detach() + layer.base.bias.detach()
    ((y - target) ** 2).sum().backward()
    torch.testing.assert_close(got_x, x.grad, rtol=1e-4, atol=1e-5)


def test_lorafusion_merged_backward_keeps_what_one_lora_keeps():
    """The memory trace: through every pool output, each adapted linear keeps N token x r outputs A_i x and N
    token x d outputs B_i u (products with a trained coefficient); through the merged adapters it keeps x and u
    (inputs of GEMMs whose merged weight trains) instead, as one LoRA would."""
    from imcsim.workloads.memory import MemoryBits, training_memory

    base = _model(1)
    pool_size, rank = 3, 2
    pool = _random_pool(base, pool_size, rank)
    x = _tokens()
    tokens = x.numel()
    kept = {}
    for merged in (True, False):
        model = copy.deepcopy(base)
        wrappers = attach_lorafusion(model, pool, ("q", "v"), rank=rank)
        for w in wrappers:
            w.merged_backward = merged
        kept[merged] = (training_memory(model.parameters(), lambda model=model: model(x), momentum=True).kept_by_kind,
                        len(wrappers))
    (merged, n), (pooled, _) = kept[True], kept[False]
    bits = MemoryBits().activation_bits
    # merged: per adapted linear, x (d inputs) and u (r) as GEMM inputs; none of the pool outputs
    assert merged["gemm_input"] - pooled.get("gemm_input", 0) == n * tokens * (D + rank) * bits
    assert pooled["product_operand"] - merged["product_operand"] == n * pool_size * tokens * (rank + D) * bits


def test_a_stacked_pool_computes_the_same_layer_in_two_matrices():
    """``layout: stacked``: [A_1; ...; A_N] (N r x k) and [B_1 ... B_N] (d x N r) as one pool module; in float the
    layer equals the separate layout's (the same fused weight), and its parameters are the same values."""
    base = _model(1)
    pool = _random_pool(base, 3, 2)
    out = {}
    for layout in ("separate", "stacked"):
        model = copy.deepcopy(base)
        wrappers = attach_lorafusion(model, pool, ("q", "v"), rank=2, layout=layout)
        with torch.no_grad():
            for c in fusion_coefficients(model):
                c.w.copy_(torch.tensor([0.3, -0.7, 1.1]))
        out[layout] = (model(_tokens()), {m.name: tuple(m.weight.shape) for m in imc_modules(model)}, wrappers)
    torch.testing.assert_close(out["stacked"][0], out["separate"][0], rtol=1e-5, atol=1e-6)
    shapes = out["stacked"][1]
    assert shapes["enc.0.attn.q.pool.A"] == (3 * 2, D)
    assert shapes["enc.0.attn.q.pool.B"] == (D, 3 * 2)
    assert "enc.0.attn.q.pool0.A" in out["separate"][1]
    assert "enc.0.attn.q.pool0.A" not in shapes
    for s, p in zip(out["stacked"][2], out["separate"][2], strict=True):
        torch.testing.assert_close(s.delta_weight(), p.delta_weight())
