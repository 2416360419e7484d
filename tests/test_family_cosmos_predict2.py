"""Cosmos Predict2 text-to-image on a tiny model of its real architecture: the checks every family passes (family_checks)."""

import pytest

from dice_testkit import family_checks as checks
from dice_testkit.family_checks import (  # noqa: F401  (collected here, run for this module's family)
    test_cfg1_on_refined_conditioning_sends_half_the_rows_of_cfg,
    test_strength_zero_returns_the_input_exactly,
    test_teacher_latent_matches_the_family_empty_latent,
    test_the_file_records_the_family_and_another_family_is_refused,
    test_training_beats_the_unrefined_prompt_on_held_out_prompts,
    trained,
)
from dice_testkit.tiny_families import cosmos_predict2 as family

pytestmark = [pytest.mark.families, checks.runtime_mark(family)]
