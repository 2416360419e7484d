"""Families DICE does not apply to get one sentence from both nodes, never a shape error from inside a model:
guidance-distilled Flux dev and schnell (no CFG to distil), and a family DICE does not know
(InstructPix2Pix, image-conditioned)."""

import pytest
import torch

from dice_core.families import UnsupportedFamilyError
from dice_core.fileformat import RefinerBundle
from dice_core.refiner import Refiner
from dice_testkit import tiny_models

pytestmark = pytest.mark.families

FLUX = {  # a tiny Flux: ComfyUI builds the model; no forward pass is needed to be refused
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768,
    "context_in_dim": 4096, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
    "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
}


def _flux(schnell: bool):
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.supported_models

    unet = {**FLUX, "guidance_embed": not schnell}
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        unet["txt_ids_dims"] = []  # 0.33's FluxParams requires it; its detection gives [] for Flux.1
    config = comfy.supported_models.FluxSchnell if schnell else comfy.supported_models.Flux
    model = config(unet).get_model({})
    tiny_models.init_weights(model, 0)
    return tiny_models.as_patcher(model)


def _instruct_pix2pix():
    import comfy.supported_models

    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 8, "out_channels": 4, "model_channels": 32,
        "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
        "num_heads": 4, "num_head_channels": -1, "context_dim": 768, "use_linear_in_transformer": False,
        "legacy": False, "adm_in_channels": None, "transformer_depth_middle": 1, "use_spatial_transformer": True,
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    model = comfy.supported_models.SD15_instructpix2pix(unet).get_model({})
    tiny_models.init_weights(model, 0)
    return tiny_models.as_patcher(model)


CASES = {
    "Flux": (lambda: _flux(False), "Flux dev is guidance-distilled.*DICE does not apply to Flux"),
    "FluxSchnell": (lambda: _flux(True), "Flux schnell is step-distilled.*DICE does not apply to FluxSchnell"),
    "SD15_instructpix2pix": (_instruct_pix2pix, "DICE does not support the model family SD15_instructpix2pix"),
}


def _train_args():
    return dict(prompts="", prompts_file="(none)", steps=1, batch_size=1, guidance_scale=5.0, recipe="dice-pack",
                learning_rate=0.0, loss="auto", seed=0, width=64, height=64, samples_per_prompt=1, teacher_steps=2,
                save_every=0, filename_prefix="test", gradient_checkpointing=False, autocast="none")


@pytest.mark.parametrize("family", list(CASES))
def test_train_node_refuses_with_a_sentence(comfy_nodes, comfy_dirs, family):
    build, message = CASES[family]
    patcher = build()
    assert type(patcher.model.model_config).__name__ == family
    dim = 4096 if family.startswith("Flux") else 768
    cond = [[torch.randn(1, 8, dim), {"pooled_output": torch.randn(1, 768)}]]
    with pytest.raises(UnsupportedFamilyError, match=message):
        comfy_nodes["DiceTrainRefiner"].execute(patcher, conditioning=cond, negative=cond, **_train_args())


@pytest.mark.parametrize("family", list(CASES))
def test_refine_node_refuses_with_a_sentence(comfy_nodes, family):
    build, message = CASES[family]
    dim = 4096 if family.startswith("Flux") else 768
    bundle = RefinerBundle(module=Refiner(dim, 32, 2), family="SD15", keep_rule="none", null_uc=torch.zeros(1, 1, dim))
    cond = [[torch.randn(1, 8, dim), {}]]
    with pytest.raises(UnsupportedFamilyError, match=message):
        comfy_nodes["DiceRefineConditioning"].execute(cond, bundle, 1.0, model=build())
