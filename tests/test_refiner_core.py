"""dice_core alone: architecture, maths, kept tokens, broadcasting. No ComfyUI needed."""

import math

import pytest
import torch

from dice_core.refiner import Refiner, count_parameters, keep_mask, refine


@pytest.mark.parametrize("dim,expected", [(768, 1_836_800), (2048, 3_148_800), (4096, 5_248_000)])
def test_parameter_counts_match_the_paper(dim, expected):
    assert count_parameters(Refiner(dim)) == expected


def test_parameter_names_are_the_official_ones():
    names = set(Refiner(64).state_dict())
    assert names == {
        "fc1.weight", "fc1.bias", "attention.to_q.weight", "attention.to_k.weight", "attention.to_v.weight",
        "attention.to_out.0.weight", "attention.to_out.0.bias", "fc2.weight", "fc2.bias",
    }
    r = Refiner(64)
    assert r.attention.to_q.bias is None and r.attention.to_out[0].bias is not None


def _reference_forward(r: Refiner, c, uc):
    """The same maths written out with explicit einsums and a manual softmax."""
    sd = {k: v.double() for k, v in r.state_dict().items()}
    relu = torch.relu
    q_in = relu(c.double() @ sd["fc1.weight"].T + sd["fc1.bias"])
    kv_in = relu(uc.double() @ sd["fc1.weight"].T + sd["fc1.bias"])
    q, k, v = q_in @ sd["attention.to_q.weight"].T, kv_in @ sd["attention.to_k.weight"].T, kv_in @ sd["attention.to_v.weight"].T
    h, d = r.heads, r.inner_dim // r.heads
    outs = []
    for i in range(h):
        qi, ki, vi = (t[..., i * d:(i + 1) * d] for t in (q, k, v))
        logits = torch.einsum("bid,bjd->bij", qi, ki) / math.sqrt(d)
        w = torch.exp(logits - logits.amax(-1, keepdim=True))
        w = w / w.sum(-1, keepdim=True)
        outs.append(torch.einsum("bij,bjd->bid", w, vi))
    att = torch.cat(outs, -1) @ sd["attention.to_out.0.weight"].T + sd["attention.to_out.0.bias"]
    return relu(att) @ sd["fc2.weight"].T + sd["fc2.bias"]


def test_forward_matches_independent_recomputation():
    torch.manual_seed(0)
    r = Refiner(96, inner_dim=64, heads=8)
    c, uc = torch.randn(3, 77, 96), torch.randn(3, 20, 96)
    torch.testing.assert_close(r(c, uc).double(), _reference_forward(r, c, uc), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tokens", [77, 154, 231])
def test_start_token_of_every_clip_chunk_is_kept(tokens):
    torch.manual_seed(0)
    r = Refiner(32, inner_dim=32, heads=4)
    c, uc = torch.randn(2, tokens, 32), torch.randn(1, 77, 32)
    out = refine(r, c, uc, 1.0, "clip_chunk_start")
    kept = torch.arange(0, tokens, 77)
    assert torch.equal(out[:, kept], c[:, kept])
    changed = torch.ones(tokens, dtype=torch.bool)
    changed[kept] = False
    assert (out[:, changed] != c[:, changed]).any(-1).all()
    assert keep_mask(tokens, "clip_chunk_start").sum() == tokens // 77


def test_t5_rule_keeps_nothing_and_first_rule_keeps_position_zero():
    assert keep_mask(10, "none").sum() == 0
    assert keep_mask(10, "first").tolist() == [True] + [False] * 9
    with pytest.raises(ValueError, match="kept-token rule"):
        keep_mask(10, "bogus")


def test_zero_rows_rule_keeps_exactly_the_rows_each_prompt_has_zeroed():
    torch.manual_seed(0)
    r = Refiner(32, inner_dim=32, heads=4)
    c = torch.randn(2, 6, 32)
    c[0, 3:] = 0.0  # prompt 0: three words, then zeroed padding
    c[1, 5:] = 0.0  # prompt 1: five words
    out = refine(r, c, torch.randn(1, 4, 32), 1.0, "zero_rows")
    zero = (c == 0).all(-1)
    assert torch.equal(out[zero], c[zero])
    assert (out[~zero] != c[~zero]).any(-1).all()


def test_the_shared_null_prompt_gives_what_a_repeated_one_gives():
    torch.manual_seed(0)
    r = Refiner(32, inner_dim=32, heads=4)
    c, uc = torch.randn(3, 5, 32), torch.randn(1, 7, 32)
    shared, repeated = refine(r, c, uc, 1.0, "none"), refine(r, c, uc.repeat(3, 1, 1), 1.0, "none")
    # The same products, summed in a possibly different order: float32 rounding of sums of 32 terms.
    assert torch.allclose(shared, repeated, rtol=0, atol=32 * torch.finfo(torch.float32).eps * c.abs().max() * 4)


def test_alpha_zero_is_identity_and_alpha_scales_linearly():
    torch.manual_seed(0)
    r = Refiner(32, inner_dim=32, heads=4)
    c, uc = torch.randn(1, 77, 32), torch.randn(1, 77, 32)
    assert torch.equal(refine(r, c, uc, 0.0), c)
    d1 = refine(r, c, uc, 1.0) - c
    d2 = refine(r, c, uc, 2.0) - c
    torch.testing.assert_close(d2, 2 * d1)


def test_uc_batch_of_one_broadcasts_and_may_differ_in_length():
    torch.manual_seed(0)
    r = Refiner(32, inner_dim=32, heads=4)
    c, uc = torch.randn(4, 154, 32), torch.randn(1, 77, 32)
    out = refine(r, c, uc)
    assert out.shape == c.shape
    torch.testing.assert_close(out[2:3], refine(r, c[2:3], uc))


def test_dtype_and_device_follow_the_conditioning():
    r = Refiner(32, inner_dim=32, heads=4)
    c, uc = torch.randn(1, 77, 32, dtype=torch.float16), torch.randn(1, 77, 32, dtype=torch.float16)
    out = refine(r, c, uc)
    assert out.dtype == torch.float16 and out.device == c.device
    assert next(r.parameters()).dtype == torch.float32


def test_bad_shapes_and_values_get_clear_errors():
    r = Refiner(768)
    with pytest.raises(ValueError, match="trained for dim 768.*SD15"):
        refine(r, torch.randn(1, 77, 2048), torch.randn(1, 77, 2048), family="SD15")
    with pytest.raises(ValueError, match="negative/null conditioning has embedding dim 1024"):
        refine(r, torch.randn(1, 77, 768), torch.randn(1, 77, 1024))
    bad = torch.randn(1, 77, 768)
    bad[0, 5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        refine(r, bad, torch.randn(1, 77, 768))
    with pytest.raises(ValueError, match="cannot pair"):
        refine(r, torch.randn(3, 77, 768), torch.randn(2, 77, 768))
