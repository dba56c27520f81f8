"""Hook points, run_with_cache and run_with_hooks on the Decoder (tfs_decoder.hooks).

Checks: every documented hook point exists with its documented shape; the residual-stream
bookkeeping holds (each block's resid_post is the next block's resid_pre, and the final
LayerNorm then the unembedding of the last resid_post gives the logits); a head ablation
through hook_pattern changes the output and patching the clean pattern back restores it;
hooks are removed afterwards, also when the forward raises. Tolerance: fp32, 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tfs_decoder import Decoder, DecoderConfig, hook_points, run_with_cache, run_with_hooks

CONFIG = DecoderConfig(
    d_vocab=40, d_model=24, n_heads=3, d_head=8, d_mlp=48, n_layers=3, n_ctx=12, init_std=0.2
)
BATCH, POS = 2, 7


def model_and_tokens(seed: int = 0) -> tuple[Decoder, Tensor]:
    torch.manual_seed(seed)
    model = Decoder(CONFIG).eval()
    tokens = torch.randint(0, CONFIG.d_vocab, (BATCH, POS), generator=torch.Generator())
    return model, tokens


def expected_shapes(c: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """The hook points the issue names (plus ln1/ln2 and attn_out/mlp_out), with shapes."""
    resid = (BATCH, POS, c.d_model)
    heads = (BATCH, POS, c.n_heads, c.d_head or c.d_model // c.n_heads)
    shapes: dict[str, tuple[int, ...]] = {"hook_embed": resid, "hook_pos_embed": resid}
    shapes["ln_final.hook_normalized"] = resid
    for i in range(c.n_layers):
        for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out"):
            shapes[f"blocks.{i}.{name}"] = resid
        shapes[f"blocks.{i}.hook_resid_post"] = resid
        shapes[f"blocks.{i}.ln1.hook_normalized"] = resid
        shapes[f"blocks.{i}.ln2.hook_normalized"] = resid
        for name in ("hook_q", "hook_k", "hook_v", "hook_z"):
            shapes[f"blocks.{i}.attn.{name}"] = heads
        shapes[f"blocks.{i}.attn.hook_pattern"] = (BATCH, c.n_heads, POS, POS)
        shapes[f"blocks.{i}.mlp.hook_pre"] = (BATCH, POS, c.d_mlp)
        shapes[f"blocks.{i}.mlp.hook_post"] = (BATCH, POS, c.d_mlp)
    return shapes


def test_run_with_cache_records_every_hook_point_with_its_shape() -> None:
    model, tokens = model_and_tokens()
    logits, cache = model.run_with_cache(tokens)
    shapes = expected_shapes(CONFIG)
    assert set(hook_points(model)) == set(shapes) == set(cache)
    assert {name: tuple(t.shape) for name, t in cache.items()} == shapes
    torch.testing.assert_close(logits, model(tokens), atol=0.0, rtol=0.0)
    assert not any(t.requires_grad for t in cache.values())  # detached


def test_residual_stream_bookkeeping() -> None:
    model, tokens = model_and_tokens()
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"]
    )
    for i in range(CONFIG.n_layers):
        pre, mid, post = (cache[f"blocks.{i}.hook_resid_{s}"] for s in ("pre", "mid", "post"))
        torch.testing.assert_close(mid, pre + cache[f"blocks.{i}.hook_attn_out"])
        torch.testing.assert_close(post, mid + cache[f"blocks.{i}.hook_mlp_out"])
        if i + 1 < CONFIG.n_layers:
            assert torch.equal(post, cache[f"blocks.{i + 1}.hook_resid_pre"])
    last = cache[f"blocks.{CONFIG.n_layers - 1}.hook_resid_post"]
    with torch.no_grad():
        torch.testing.assert_close(
            model.unembed(model.ln_final(last)), logits, atol=1e-5, rtol=1e-5
        )
        normalized = cache["ln_final.hook_normalized"]
        torch.testing.assert_close(normalized @ model.unembed.W_U + model.unembed.b_U, logits)


def test_patterns_are_causal_distributions() -> None:
    model, tokens = model_and_tokens()
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(CONFIG.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    assert list(cache) == names
    for pattern in cache.values():
        torch.testing.assert_close(pattern.sum(-1), torch.ones(BATCH, CONFIG.n_heads, POS))
        assert torch.equal(pattern.triu(diagonal=1), torch.zeros_like(pattern))


def test_ablating_a_head_changes_the_logits_and_patching_it_back_restores_them() -> None:
    model, tokens = model_and_tokens()
    name = "blocks.1.attn.hook_pattern"
    clean_logits, clean = model.run_with_cache(tokens, names=[name])

    def ablate_head_2(pattern: Tensor, hook: str) -> Tensor:
        assert hook == name
        pattern = pattern.clone()
        pattern[:, 2] = 0.0
        return pattern

    ablated = model.run_with_hooks(tokens, fwd_hooks=[(name, ablate_head_2)])
    assert (ablated - clean_logits).abs().max() > 1e-2
    # Patching: ablate, then put the clean pattern back at the same point.
    restored = model.run_with_hooks(
        tokens, fwd_hooks=[(name, ablate_head_2), (name, lambda p, h: clean[name])]
    )
    torch.testing.assert_close(restored, clean_logits, atol=1e-6, rtol=1e-6)
    # The hooks were removed: a plain forward is clean again.
    torch.testing.assert_close(model(tokens), clean_logits, atol=0.0, rtol=0.0)


def test_a_hook_returning_none_only_reads() -> None:
    model, tokens = model_and_tokens()
    seen: list[str] = []
    logits = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.0.mlp.hook_post", lambda act, name: seen.append(name))]
    )
    assert seen == ["blocks.0.mlp.hook_post"]
    torch.testing.assert_close(logits, model(tokens), atol=0.0, rtol=0.0)


def test_unknown_names_are_rejected_with_the_known_kinds() -> None:
    model, tokens = model_and_tokens()
    with pytest.raises(
        ValueError,
        match=r"names: expected hook point names such as \[.*"
        r"'blocks\.\{i\}\.attn\.hook_pattern'.*\], got \['blocks\.0\.hook_q'\]",
    ):
        model.run_with_cache(tokens, names=["blocks.0.hook_q"])
    with pytest.raises(ValueError, match=r"fwd_hooks: .* got \['blocks\.9\.attn\.hook_z'\]"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.9.attn.hook_z", lambda a, n: None)])


def test_hooks_are_removed_when_the_forward_raises() -> None:
    model, tokens = model_and_tokens()

    def broken(act: Tensor, name: str) -> Tensor:
        raise RuntimeError("broken hook")

    with pytest.raises(RuntimeError, match="broken hook"):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", broken)])
    assert not any(module._forward_hooks for module in hook_points(model).values())
    with pytest.raises(TypeError, match="tokens"):  # the runtime checker, or the module's own
        run_with_cache(model, tokens[0])  # a 1-D input fails inside the forward
    assert not any(module._forward_hooks for module in hook_points(model).values())


def test_hooks_work_on_any_module_with_hook_points() -> None:
    """The functions take any nn.Module whose submodules are named hook_*."""

    class Doubler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hook_doubled = nn.Identity()

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.hook_doubled(2 * x)
            return out + 1

    x = torch.arange(3.0)
    out, cache = run_with_cache(Doubler(), x)
    assert torch.equal(cache["hook_doubled"], 2 * x)
    assert torch.equal(out, 2 * x + 1)
    replaced = run_with_hooks(Doubler(), x, fwd_hooks=[("hook_doubled", lambda a, n: -a)])
    assert torch.equal(replaced, 1 - 2 * x)


def test_hooks_see_cached_generation_steps() -> None:
    """With a KV cache each step's hooks see only the new position; its pattern row spans
    every cached source position."""
    model, tokens = model_and_tokens()
    cache = model.make_kv_cache()
    model(tokens, kv_cache=cache)
    _, acts = run_with_cache(
        model, tokens[:, :1], names=["blocks.0.attn.hook_pattern"], kv_cache=cache
    )
    assert acts["blocks.0.attn.hook_pattern"].shape == (BATCH, CONFIG.n_heads, 1, POS + 1)
