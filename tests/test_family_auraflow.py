"""AuraFlow on a tiny model of its real architecture: the checks every family passes (family_checks)."""

import family_checks as checks
import pytest
from tiny_families import auraflow as family

pytestmark = [pytest.mark.families, checks.runtime_mark(family)]


@pytest.fixture(scope="module")
def trained(comfy_nodes):
    return checks.Trained(family)


def test_teacher_latent_matches_the_family_empty_latent(trained):
    checks.check_latent_shape(family, trained)


def test_training_beats_the_unrefined_prompt_on_held_out_prompts(trained):
    checks.check_held_out_loss_falls(family, trained)


def test_cfg1_on_refined_conditioning_sends_half_the_rows_of_cfg(trained, comfy_nodes):
    checks.check_cfg1_halves_the_rows(family, trained, comfy_nodes)


def test_strength_zero_returns_the_input_exactly(trained, comfy_nodes):
    checks.check_strength_zero_is_the_input(family, trained, comfy_nodes)


def test_the_file_records_the_family_and_another_family_is_refused(trained, comfy_nodes, tmp_path):
    checks.check_the_file_names_the_family(family, trained, comfy_nodes, tmp_path)
