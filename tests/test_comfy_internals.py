"""dice_comfy/internals.py: every private ComfyUI API the pack relies on, exercised on the runtime under
test (the suite runs on 0.3.75 and 0.33.0). load_checkpoint is exercised by tests/test_tiny_checkpoint.py."""

import pytest
import torch

from dice_testkit import tiny_models, tolerances


@pytest.fixture()
def internals(comfy_nodes):
    from dice_comfy import internals

    return internals


def test_encode_conds_applies_the_family_extras_and_denoise_batches(internals):
    patcher = tiny_models.sdxl()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = tiny_models.clip_conditioning(1, 2048, batch=2, pooled=1280)[0]
    uc = tiny_models.clip_conditioning(2, 2048, batch=2, pooled=1280)[0]
    conds_c = internals.encode_conds(patcher, c[0], c[1], x, "positive")
    conds_uc = internals.encode_conds(patcher, uc[0], uc[1], x, "negative")
    assert len(conds_c) == 1 and "y" in conds_c[0]["model_conds"], "SDXL's pooled/size vector (adm) comes from extra_conds"
    sigma = torch.full((2,), 3.0)
    patcher.pre_run()
    try:
        with torch.no_grad():
            together = internals.denoise(patcher, [conds_c, conds_uc], x, sigma, patcher.model_options)
            alone = internals.denoise(patcher, [conds_c], x, sigma, patcher.model_options)
    finally:
        patcher.cleanup()
    assert len(together) == 2 and together[0].shape == x.shape
    assert not torch.equal(together[0], together[1]), "cond and uncond differ"
    # Batched with uncond or alone, the cond rows are the same per-sample computation; only the batch size,
    # and so the kernels' blocking, differs. The longest float32 sum in the tiny UNet is a 3x3 conv over 64
    # channels (576 terms); a few layers deep, 4096 terms' worth of rounding bounds it with room to spare.
    bound = tolerances.summation_error(4096) * float(alone[0].abs().max())
    torch.testing.assert_close(together[0], alone[0], rtol=0, atol=bound)


def test_sigma_schedule_and_device(internals):
    sigmas = internals.sigma_schedule(tiny_models.sd15(), 4)
    assert sigmas.shape == (5,) and float(sigmas[-1]) == 0.0 and bool((sigmas[:-1] > sigmas[1:]).all())
    assert internals.torch_device().type == "cpu"


def test_trainable_patcher_is_the_shared_one_on_a_cpu(internals):
    """ModelPatcherDynamic becomes a plain ModelPatcher for a CPU load device, and 0.3.75 has none: on the
    CPU the shared patcher itself trains (trainable_view restores it). The dynamic branch needs a GPU:
    benchmarks/run_gpu.py checks it on a lent card."""
    patcher = tiny_models.sd15()
    assert internals.trainable_patcher(patcher) is patcher
    if hasattr(patcher, "is_dynamic"):
        assert patcher.is_dynamic() is False


def test_training_mode_sets_and_restores_comfys_flag(internals):
    import comfy.model_management as mm

    if not hasattr(mm, "in_training"):  # 0.3.75 has no such flag, and nothing must be added
        with internals.training_mode():
            assert not hasattr(mm, "in_training")
        return
    assert mm.in_training is False
    with internals.training_mode():
        assert mm.in_training is True
    assert mm.in_training is False
    with pytest.raises(ZeroDivisionError), internals.training_mode():
        1 / 0  # noqa: B018
    assert mm.in_training is False, "restored on errors too"


def test_gradient_checkpointing_patches_and_unpatches(internals):
    patcher = tiny_models.sd15()
    model = patcher.model
    internals.load_fully(patcher)
    patched = internals.checkpoint_gradients(model.diffusion_model)
    assert patched and all(hasattr(m, "org_forward") for m in patched)
    internals.uncheckpoint_gradients(model)
    assert not any(hasattr(m, "org_forward") for m in model.modules())


def test_throw_if_interrupted_raises_comfys_exception(internals):
    import comfy.model_management as mm

    internals.throw_if_interrupted()  # nothing pending
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            internals.throw_if_interrupted()
    finally:
        mm.interrupt_current_processing(False)


def test_training_runs_with_comfys_training_flag_set(comfy_nodes):
    """DICE Train Refiner calls the model with comfy.model_management.in_training set (0.33), as
    TrainLoraNode does, and leaves it as it was."""
    import comfy.model_management as mm

    from dice_comfy import session
    from dice_core.training import TrainConfig

    patcher = tiny_models.sd15()
    seen = []
    handle = patcher.model.diffusion_model.register_forward_pre_hook(lambda *_: seen.append(getattr(mm, "in_training", None)))
    try:
        cfg = TrainConfig.from_recipe("dice-pack", steps=2, batch_size=2, teacher_steps=2, samples_per_prompt=1)
        session.run_training(patcher, tiny_models.clip_conditioning(1, 768) + tiny_models.clip_conditioning(2, 768),
                             tiny_models.clip_conditioning(3, 768)[0], cfg, session.SessionOptions(width=64, height=64))
    finally:
        handle.remove()
    assert seen, "the model was called"
    expected = True if hasattr(mm, "in_training") else None
    assert set(seen) == {expected}
    assert getattr(mm, "in_training", None) in (False, None)


def test_checkpoint_weight_and_weight_patches_see_through_a_loaded_lora(internals):
    """While a LoRA clone is loaded, its patches sit in the shared model's weights; checkpoint_weight still reads the
    checkpoint's value (from the backup every clone shares), and weight_patches lists what the LoRA patches."""
    import comfy.model_management

    import nodes
    from toyworld.comfy_objects import LORA_NAME, load_toy_world

    base = load_toy_world()[0]
    (stacked,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, LORA_NAME, 1.0)
    name = "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"
    original = base.model.diffusion_model.state_dict()[name].clone()
    assert internals.weight_patches(base) == {}
    assert f"diffusion_model.{name}" in internals.weight_patches(stacked)
    comfy.model_management.load_models_gpu([stacked])
    try:
        applied = base.model.diffusion_model.state_dict()[name]
        assert not torch.equal(applied, original), "the LoRA is applied in place while loaded"
        for patcher in (base, stacked):
            assert torch.equal(internals.checkpoint_weight(patcher, name, applied), original)
    finally:
        comfy.model_management.unload_all_models()
    assert torch.equal(internals.checkpoint_weight(base, name, original), original)
