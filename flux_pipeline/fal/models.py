"""Typed inputs and outputs of fal's FLUX1.1 [pro] endpoints (see shared/fal-api/endpoints.md).

The same models validate on both sides: the client rejects bad input before sending it, and the
emulator answers the 422 fal would for input that reaches it anyway.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

TEXT_TO_IMAGE = "fal-ai/flux-pro/v1.1"
REDUX = "fal-ai/flux-pro/v1.1/redux"
ENDPOINTS = (TEXT_TO_IMAGE, REDUX)

ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]
PRESET_SIZES: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
OutputFormat = Literal["jpeg", "png"]
CONTENT_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png"}


MAX_SIDE = 14142
"""The largest width or height fal accepts in a custom size. Our spec (shared/fal-api/endpoints.md)
gives no bound. fal's "Common Model Arguments" page (docs.fal.ai/documentation/model-apis/
model-arguments) says `image_size` is shared by the models built with fal's toolkit, FLUX among
them; fal's queue OpenAPI for such a model (https://fal.ai/api/openapi/queue/openapi.json?
endpoint_id=..., components.schemas.ImageSize) documents `width` and `height` as integers with
`exclusiveMinimum: 0` and `maximum: 14142`. We found that schema quoted from endpoints other than
FLUX1.1 [pro]; if fal ever answers a 422 below this bound, that answer is the truth. 14142² is 200
megapixels: $8 an image at $0.04 per megapixel."""

SEED_RANGE = (-(2**63), 2**63 - 1)
"""fal documents a seed as an integer with no bound; ours is what the catalog's int64 `seed`
column can store, so a seed that could not be cataloged is never sent (and paid for)."""


class ImageSize(BaseModel):
    """A custom size, each side within fal's documented bounds (0, MAX_SIDE]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = Field(gt=0, le=MAX_SIDE)
    height: int = Field(gt=0, le=MAX_SIDE)


def _size_kind(value: object) -> str:
    return "preset" if isinstance(value, str) else "custom"


SizeChoice = Annotated[
    Annotated[ImageSizePreset, Tag("preset")] | Annotated[ImageSize, Tag("custom")], Discriminator(_size_kind)
]
"""A preset name or a custom size: an error names the branch the value was meant for (a width of
0 is "greater than 0" at `image_size.custom.width`, not "not a preset")."""


def _tolerance_as_text(value: object) -> object:
    # fal takes safety_tolerance as the string "1".."6"; users naturally write integers.
    if isinstance(value, bool):
        return value  # rejected below: True is not a tolerance level
    if isinstance(value, int):
        return str(value)
    return value


SafetyTolerance = Annotated[Literal["1", "2", "3", "4", "5", "6"], BeforeValidator(_tolerance_as_text)]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or blank")
    return text


NonBlankText = Annotated[str, AfterValidator(_not_blank)]


class TextToImageInput(BaseModel):
    """Input of `fal-ai/flux-pro/v1.1`."""

    model_config = ConfigDict(extra="forbid")

    prompt: NonBlankText
    image_size: SizeChoice = "landscape_4_3"
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    sync_mode: bool = False
    num_images: int = Field(default=1, ge=1, le=4)
    output_format: OutputFormat = "jpeg"
    safety_tolerance: SafetyTolerance = "2"
    enhance_prompt: bool = False

    def size(self) -> tuple[int, int]:
        """Width and height in pixels of every image this input asks for."""
        if isinstance(self.image_size, ImageSize):
            return self.image_size.width, self.image_size.height
        return PRESET_SIZES[self.image_size]

    def wire(self) -> dict:
        """The JSON body fal expects (unset seed left out so the server picks one)."""
        return self.model_dump(mode="json", exclude_none=True)


class ReduxInput(TextToImageInput):
    """Input of `fal-ai/flux-pro/v1.1/redux`: every text-to-image field plus the image to vary."""

    prompt: str = ""
    image_url: str = Field(min_length=1)
    num_inference_steps: int = Field(default=28, ge=1, le=50)
    guidance_scale: float = Field(default=3.5, ge=1, le=20)


FluxInput = TextToImageInput | ReduxInput


def input_model(endpoint: str) -> type[TextToImageInput]:
    if endpoint == TEXT_TO_IMAGE:
        return TextToImageInput
    if endpoint == REDUX:
        return ReduxInput
    raise ValueError(f"unknown FLUX endpoint {endpoint!r}; expected one of {ENDPOINTS}")


class FalImage(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


class FluxOutput(BaseModel):
    """Output of both endpoints."""

    model_config = ConfigDict(extra="allow")
    images: list[FalImage]
    timings: dict[str, float] = Field(default_factory=dict)
    seed: int
    has_nsfw_concepts: list[bool] = Field(default_factory=list)
    prompt: str = ""


def billed_megapixels(width: int, height: int, megapixel_size: int = 1024 * 1024) -> int:
    """fal bills each image by its size rounded up to whole megapixels."""
    return math.ceil(width * height / megapixel_size)
