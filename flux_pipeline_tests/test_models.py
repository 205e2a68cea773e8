"""Input validation happens before anything is sent, naming the field."""

import pytest

from flux_pipeline.fal.errors import FalInputError
from flux_pipeline.fal.models import (
    REDUX,
    TEXT_TO_IMAGE,
    ReduxInput,
    TextToImageInput,
    billed_megapixels,
    validate_input,
)

OUT_OF_RANGE = [
    (TEXT_TO_IMAGE, {"prompt": ""}, "prompt"),
    (TEXT_TO_IMAGE, {"prompt": "   "}, "prompt"),
    (TEXT_TO_IMAGE, {"prompt": "x", "image_size": "square_xl"}, "image_size"),
    (TEXT_TO_IMAGE, {"prompt": "x", "image_size": {"width": 0, "height": 10}}, "image_size"),
    (TEXT_TO_IMAGE, {"prompt": "x", "num_images": 0}, "num_images"),
    (TEXT_TO_IMAGE, {"prompt": "x", "num_images": 5}, "num_images"),
    (TEXT_TO_IMAGE, {"prompt": "x", "output_format": "webp"}, "output_format"),
    (TEXT_TO_IMAGE, {"prompt": "x", "safety_tolerance": 7}, "safety_tolerance"),
    (TEXT_TO_IMAGE, {"prompt": "x", "safety_tolerance": "0"}, "safety_tolerance"),
    (TEXT_TO_IMAGE, {"prompt": "x", "image_size": {"width": 14143, "height": 10}}, "image_size"),
    (TEXT_TO_IMAGE, {"prompt": "x", "seed": "abc"}, "seed"),
    (TEXT_TO_IMAGE, {"prompt": "x", "seed": 2**63}, "seed"),
    (TEXT_TO_IMAGE, {"prompt": "x", "seed": -(2**63) - 1}, "seed"),
    (TEXT_TO_IMAGE, {"prompt": "x", "unknown_field": 1}, "unknown_field"),
    (REDUX, {"prompt": "x"}, "image_url"),
    (REDUX, {"image_url": "http://x/y.png", "num_inference_steps": 0}, "num_inference_steps"),
    (REDUX, {"image_url": "http://x/y.png", "num_inference_steps": 51}, "num_inference_steps"),
    (REDUX, {"image_url": "http://x/y.png", "guidance_scale": 0.5}, "guidance_scale"),
    (REDUX, {"image_url": "http://x/y.png", "guidance_scale": 20.5}, "guidance_scale"),
]


@pytest.mark.parametrize("endpoint,data,field", OUT_OF_RANGE)
def test_out_of_range_input_names_the_field(endpoint, data, field):
    with pytest.raises(FalInputError) as caught:
        validate_input(endpoint, data)
    assert caught.value.errors[0][0].split(".")[0] == field
    assert field in str(caught.value)


def test_defaults_follow_the_spec():
    t2i = TextToImageInput(prompt="a tiger eye")
    assert t2i.wire() == {
        "prompt": "a tiger eye",
        "image_size": "landscape_4_3",
        "sync_mode": False,
        "num_images": 1,
        "output_format": "jpeg",
        "safety_tolerance": "2",
        "enhance_prompt": False,
    }
    redux = ReduxInput(image_url="https://x/y.png")
    assert redux.prompt == "" and redux.num_inference_steps == 28 and redux.guidance_scale == 3.5
    assert redux.size() == (1024, 768)


def test_safety_tolerance_accepts_int_and_is_sent_as_text():
    assert TextToImageInput(prompt="x", safety_tolerance=5).wire()["safety_tolerance"] == "5"
    assert TextToImageInput(prompt="x", safety_tolerance="6").wire()["safety_tolerance"] == "6"
    with pytest.raises(FalInputError):
        validate_input(TEXT_TO_IMAGE, {"prompt": "x", "safety_tolerance": True})


def test_a_bad_custom_size_names_its_side_and_reason_not_the_presets():
    with pytest.raises(FalInputError) as caught:
        validate_input(TEXT_TO_IMAGE, {"prompt": "x", "image_size": {"width": 0, "height": 100_000}})
    assert caught.value.errors == [
        ("image_size.custom.width", "Input should be greater than 0"),
        ("image_size.custom.height", "Input should be less than or equal to 14142"),
    ]


def test_custom_size_and_presets():
    assert TextToImageInput(prompt="x", image_size={"width": 640, "height": 480}).size() == (640, 480)
    assert TextToImageInput(prompt="x", image_size="portrait_16_9").size() == (576, 1024)


@pytest.mark.parametrize(
    "width,height,expected",
    [(1024, 1024, 1), (1024, 768, 1), (512, 512, 1), (1025, 1024, 2), (2048, 2048, 4), (1, 1, 1)],
)
def test_billed_megapixels_round_up(width, height, expected):
    assert billed_megapixels(width, height) == expected
