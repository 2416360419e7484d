"""Negative-aware training (issue 14): every prompt paired with every negative of a list, the teacher guiding
each pair with its own negative, the refiner reading each row's own uc."""

import pytest
import torch

from dice_core.refiner import Refiner, refine
from dice_core.training import PromptBank, TrainConfig
from dice_testkit import tiny_models, tolerances


def _refiner(dim: int, seed: int = 0) -> Refiner:
    torch.manual_seed(seed)
    return Refiner(dim, inner_dim=64, heads=8)


def test_each_row_is_refined_against_its_own_negative():
    """Rows grouped by negative, then put back in order: the same c' as refining each row on its own with its
    pair's uc. The negatives differ in length (a T5 negative is as long as its text), so a stacked uc would
    have needed padding inside the attention."""
    dim = 32
    module = _refiner(dim)
    c = torch.randn(6, 10, dim)
    negatives = [torch.randn(1, 10, dim), torch.randn(1, 4, dim), torch.randn(1, 7, dim)]
    negative_of = torch.tensor([0, 1, 2, 0, 1, 2])
    bank = PromptBank(c=c, uc=negatives[0], negatives=negatives, negative_of=negative_of)
    idx = torch.tensor([5, 0, 3, 1, 1])
    with torch.no_grad():
        got = bank.refine_rows(module, idx, 1.0, "first")
        want = torch.cat([refine(module, c[i:i + 1], negatives[int(negative_of[i])], 1.0, "first") for i in idx.tolist()])
    # The same per-row arithmetic in a different batch: the longest sums are fc2's 64 inner terms and the attention
    # over at most 10 keys, so 64 terms' rounding, a few layers deep, bounds the difference.
    bound = tolerances.summation_error(4 * 64) * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=bound)
    assert not torch.allclose(got[1], got[3]), "rows 0 and 1 pair the same kind of prompt with different negatives"


def test_one_negative_bank_is_refined_as_before():
    dim = 16
    module = _refiner(dim)
    bank = PromptBank(c=torch.randn(3, 5, dim), uc=torch.randn(1, 5, dim))
    idx = torch.tensor([2, 0])
    with torch.no_grad():
        assert torch.equal(bank.refine_rows(module, idx, 0.5, "none"), refine(module, bank.c[idx], bank.uc, 0.5, "none"))


def test_pairs_are_prompt_major_and_share_the_entries():
    from dice_comfy.session import TrainingPairs

    prompts = [tiny_models.clip_conditioning(s, 768)[0] for s in range(2)]
    uc = tiny_models.clip_conditioning(10, 768)[0]
    negatives = [tiny_models.clip_conditioning(s, 768)[0] for s in (11, 12)]
    pairs = TrainingPairs.build(prompts, uc, negatives)
    assert pairs.negative_of.tolist() == [0, 1, 2, 0, 1, 2] and pairs.per_prompt == 3
    assert [id(p) for p in pairs.prompts] == [id(prompts[0])] * 3 + [id(prompts[1])] * 3
    assert pairs.uc_entries[1] is negatives[0] and pairs.uc_entries[3] is uc
    single = TrainingPairs.build(prompts, uc, [])
    assert single.negative_of is None and single.uc_entries == [uc, uc] and single.per_prompt == 1


def test_the_teacher_guides_each_pair_with_its_own_negative(comfy_nodes):
    """One batched teacher call over (prompt, negative) rows gives each row what CFG with that row's negative
    alone gives."""
    from dice_comfy.bridge import ComfyDenoiser
    from dice_comfy.session import TrainingPairs

    patcher = tiny_models.sd15(seed=2)
    prompts = [tiny_models.clip_conditioning(s, 768)[0] for s in range(2)]
    ucs = [tiny_models.clip_conditioning(s, 768)[0] for s in (20, 21, 22)]
    pairs = TrainingPairs.build(prompts, ucs[0], ucs[1:])
    rows = len(pairs.prompts)
    x = torch.randn(rows, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((rows,), 2.0)
    idx = torch.arange(rows)
    patcher.pre_run()
    try:
        together = ComfyDenoiser(patcher, pairs.prompts, pairs.uc_entries, "cpu", None, None).teacher(x, sigma, idx)
        alone = [ComfyDenoiser(patcher, [pairs.prompts[i]], pairs.uc_entries[i], "cpu", None, None)
                 .teacher(x[i:i + 1], sigma[:1], torch.tensor([0])) for i in range(rows)]
    finally:
        patcher.cleanup()
    for part, name in ((0, "cond"), (1, "uncond")):
        want = torch.cat([a[part] for a in alone])
        # As in test_comfy_internals: the same per-sample computation in another batch size.
        bound = tolerances.summation_error(4096) * float(want.abs().max())
        torch.testing.assert_close(together[part], want, rtol=0, atol=bound, msg=f"{name} rows")
    assert not torch.allclose(together[1][0], together[1][1]), "rows 0 and 1 have different negatives"


def _node_args(**kw):
    return tiny_models.train_node_args(**{"steps": 3, "filename_prefix": "neg", **kw})


def _teacher_totals(monkeypatch) -> list[int]:
    """The teacher's own step totals, as the node reports them to ComfyUI's progress bar (before training's)."""
    import comfy.utils

    totals = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: totals.append(total))
    return totals


def test_train_node_pairs_prompts_with_its_negative_prompts_and_records_them(comfy_nodes, comfy_dirs, monkeypatch):
    """Two distinct negatives (a repeat is dropped) plus the empty prompt: three pairs per prompt, so the teacher
    samples three times as many trajectories; the file records the negatives for DICE Refine Conditioning."""
    node = comfy_nodes["DiceTrainRefiner"]
    totals = _teacher_totals(monkeypatch)
    with torch.inference_mode():
        plain = node.execute(tiny_models.sd15(seed=1), clip=tiny_models.TextClip(), **_node_args()).args[0]
    plain_total = max(totals) - 3
    totals.clear()
    with torch.inference_mode():
        aware = node.execute(tiny_models.sd15(seed=1), clip=tiny_models.TextClip(),
                             **_node_args(negative_prompts="blurry\n# a comment\nred\n\nblurry")).args[0]
    assert max(totals) - 3 == 3 * plain_total
    assert list(plain.recipe["negative_prompts"]) == []
    assert list(aware.recipe["negative_prompts"]) == ["blurry", "red"]
    # The default uc stays the empty prompt: it is what DICE Refine Conditioning uses with no negative connected.
    torch.testing.assert_close(aware.null_uc, tiny_models.TextClip().encode_from_tokens_scheduled("")[0][0])
    comfy_nodes["DiceSaveRefiner"].execute(aware, "neg_saved")
    loaded = comfy_nodes["DiceLoadRefiner"].execute("neg_saved_00001.safetensors").args[0]
    assert loaded.recipe["negative_prompts"] == ["blurry", "red"]


def test_negative_prompts_need_a_text_encoder(comfy_nodes, comfy_dirs):
    node = comfy_nodes["DiceTrainRefiner"]
    entries = [tiny_models.clip_conditioning(1, 768)[0]]
    with torch.inference_mode(), pytest.raises(ValueError, match="connect 'clip' to encode the negative prompts"):
        node.execute(tiny_models.sd15(), conditioning=entries, negative=[tiny_models.clip_conditioning(2, 768)[0]],
                     **_node_args(prompts="", negative_prompts="red"))


def test_session_refuses_a_config_and_negatives_that_disagree(comfy_nodes):
    from dice_comfy import session

    prompts = [tiny_models.clip_conditioning(1, 768)[0]]
    uc = tiny_models.clip_conditioning(2, 768)[0]
    cfg = TrainConfig.from_recipe("dice-pack", steps=1, batch_size=1, teacher_steps=2, samples_per_prompt=1,
                                  negative_prompts=("red", "blue"))
    with pytest.raises(ValueError, match="names 2 negative prompts but 1 negative entries"):
        session.run_training(tiny_models.sd15(), prompts, uc, cfg,
                             session.SessionOptions(width=64, height=64, negatives=[tiny_models.clip_conditioning(3, 768)[0]]))


def test_a_text_negative_on_a_paper_way_refiner_gets_a_warning_that_says_what_to_do(comfy_nodes, caplog):
    import logging

    from dice_core.fileformat import RefinerBundle

    node = comfy_nodes["DiceRefineConditioning"]
    null = tiny_models.clip_conditioning(9, 768)
    pos, neg = tiny_models.clip_conditioning(1, 768), tiny_models.clip_conditioning(5, 768)

    def bundle(recipe):
        return RefinerBundle(module=_refiner(768), family="SD15", keep_rule="clip_chunk_start", null_uc=null[0][0],
                             recipe=recipe)

    cases = [(bundle({"negative_prompts": []}), neg, True), (bundle({}), neg, True),  # imported paper weights too
             (bundle({"negative_prompts": ["red"]}), neg, False), (bundle({}), null, False), (bundle({}), None, False)]
    for b, negative, warned in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ComfyUI-DICE"):
            node.execute(pos, b, 1.0, negative)
        assert ("retrain with your negatives in DICE Train Refiner's negative_prompts" in caplog.text) == warned, (b.recipe, warned)
