"""Typed inputs and outputs of fal's FLUX endpoints: FLUX1.1 [pro] and its Redux (shared/fal-api/
endpoints.md), and FLUX.1 [schnell], FLUX.1 [dev], FLUX1.1 [pro] ultra and ultra Redux (fal's API
reference; fields, ranges, defaults, prices and sources in fal/MODELS.md).

The same models validate on both sides: the client rejects bad input before sending it, and the
emulator answers the 422 fal would for input that reaches it anyway.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
)

from .endpoints import EMULATED_HEADER
from .errors import FalInputError

TEXT_TO_IMAGE = "fal-ai/flux-pro/v1.1"
REDUX = "fal-ai/flux-pro/v1.1/redux"
SCHNELL = "fal-ai/flux/schnell"
DEV = "fal-ai/flux/dev"
ULTRA = "fal-ai/flux-pro/v1.1-ultra"
ULTRA_REDUX = "fal-ai/flux-pro/v1.1-ultra/redux"
TEXT_TO_IMAGE_ENDPOINTS = (TEXT_TO_IMAGE, SCHNELL, DEV, ULTRA)
"""The models a row may name in its `model` column."""
REDUX_ENDPOINTS = (REDUX, ULTRA_REDUX)
"""The models a Redux row may name in its `redux_model` column."""
ENDPOINTS = (TEXT_TO_IMAGE, REDUX, SCHNELL, DEV, ULTRA, ULTRA_REDUX)
MEGAPIXEL_UNIT, IMAGE_UNIT = "megapixels", "image"
LIST_PRICES: dict[str, tuple[float, str]] = {
    TEXT_TO_IMAGE: (0.04, MEGAPIXEL_UNIT),
    REDUX: (0.04, MEGAPIXEL_UNIT),
    SCHNELL: (0.003, MEGAPIXEL_UNIT),
    DEV: (0.025, MEGAPIXEL_UNIT),
    ULTRA: (0.06, IMAGE_UNIT),
    ULTRA_REDUX: (0.06, IMAGE_UNIT),
}
"""fal's documented list price and billing unit of each endpoint (fal/MODELS.md): what the emulator
prices and bills by default, and what the pipeline costs with when fal's pricing API gives no
price for an endpoint. The two FLUX1.1 [pro] endpoints keep the $0.04 the spec and the configured
`price_per_megapixel` use."""

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


class _FluxInput(BaseModel):
    """The fields every FLUX endpoint takes."""

    model_config = ConfigDict(extra="forbid")

    prompt: NonBlankText
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    sync_mode: bool = False
    num_images: int = Field(default=1, ge=1, le=4)
    output_format: OutputFormat = "jpeg"

    @abstractmethod
    def size(self) -> tuple[int, int]:
        """Width and height in pixels of every image this input asks for."""

    def wire(self) -> dict:
        """The JSON body fal expects (unset seed left out so the server picks one)."""
        return self.model_dump(mode="json", exclude_none=True)


class _SizedInput(_FluxInput):
    """An input that asks for a size: a preset name or a custom width and height."""

    image_size: SizeChoice = "landscape_4_3"

    def size(self) -> tuple[int, int]:
        if isinstance(self.image_size, ImageSize):
            return self.image_size.width, self.image_size.height
        return PRESET_SIZES[self.image_size]


class TextToImageInput(_SizedInput):
    """Input of `fal-ai/flux-pro/v1.1`."""

    safety_tolerance: SafetyTolerance = "2"
    enhance_prompt: bool = False


class ReduxInput(TextToImageInput):
    """Input of `fal-ai/flux-pro/v1.1/redux`: every text-to-image field plus the image to vary."""

    prompt: str = ""
    image_url: str = Field(min_length=1)
    num_inference_steps: int = Field(default=28, ge=1, le=50)
    guidance_scale: float = Field(default=3.5, ge=1, le=20)


class SchnellInput(_SizedInput):
    """Input of `fal-ai/flux/schnell`: few steps, no guidance, no safety tolerance."""

    num_inference_steps: int = Field(default=4, ge=1, le=12)
    enable_safety_checker: bool = True


class DevInput(_SizedInput):
    """Input of `fal-ai/flux/dev`."""

    num_inference_steps: int = Field(default=28, ge=1, le=50)
    guidance_scale: float = Field(default=3.5, ge=1, le=20)
    enable_safety_checker: bool = True


AspectRatio = Literal["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
ULTRA_SIZES: dict[str, tuple[int, int]] = {
    "21:9": (3136, 1344),
    "16:9": (2752, 1536),
    "4:3": (2368, 1792),
    "3:2": (2496, 1664),
    "1:1": (2048, 2048),
    "2:3": (1664, 2496),
    "3:4": (1792, 2368),
    "9:16": (1536, 2752),
    "9:21": (1344, 3136),
}
"""The about-4-megapixel size ultra renders for each aspect ratio (BFL's ultra sizes; fal documents
"up to 4 megapixels (2048x2048)"). Ultra bills per image, so the size never changes a cost."""


class UltraInput(_FluxInput):
    """Input of `fal-ai/flux-pro/v1.1-ultra`: an aspect ratio instead of an image size, `raw` for
    less processed images, and an optional image prompt."""

    aspect_ratio: AspectRatio = "16:9"
    raw: bool = False
    safety_tolerance: SafetyTolerance = "2"
    enhance_prompt: bool = False
    image_url: str | None = None
    image_prompt_strength: float = Field(default=0.1, ge=0, le=1)

    def size(self) -> tuple[int, int]:
        return ULTRA_SIZES[self.aspect_ratio]


class UltraReduxInput(UltraInput):
    """Input of `fal-ai/flux-pro/v1.1-ultra/redux`: the ultra fields, the image to vary required."""

    prompt: str = ""
    image_url: str = Field(min_length=1)


FluxInput = TextToImageInput | ReduxInput | SchnellInput | DevInput | UltraInput | UltraReduxInput
INPUT_MODELS: dict[str, type[FluxInput]] = {
    TEXT_TO_IMAGE: TextToImageInput,
    REDUX: ReduxInput,
    SCHNELL: SchnellInput,
    DEV: DevInput,
    ULTRA: UltraInput,
    ULTRA_REDUX: UltraReduxInput,
}


def input_model(endpoint: str) -> type[FluxInput]:
    if (model := INPUT_MODELS.get(endpoint)) is None:
        raise ValueError(f"unknown FLUX endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    return model


def takes(endpoint: str, field_name: str) -> bool:
    """Whether `endpoint`'s input has the field."""
    return field_name in input_model(endpoint).model_fields


class FalImage(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


class FluxOutput(BaseModel):
    """Output of every FLUX endpoint."""

    model_config = ConfigDict(extra="allow")
    images: list[FalImage]
    timings: dict[str, float] = Field(default_factory=dict)
    seed: int
    has_nsfw_concepts: list[bool] = Field(default_factory=list)
    prompt: str = ""
    _emulated: bool = PrivateAttr(default=False)

    @property
    def emulated(self) -> bool:
        """Whether an emulator answered (endpoints.EMULATED_HEADER), so nothing was paid for it."""
        return self._emulated

    def answered_by(self, headers: Mapping[str, str]) -> FluxOutput:
        """Records from the response's headers whether an emulator answered."""
        self._emulated = headers.get(EMULATED_HEADER) == "1"
        return self


def billed_megapixels(width: int, height: int, megapixel_size: int = 1024 * 1024) -> int:
    """fal bills each image by its size rounded up to whole megapixels."""
    return math.ceil(width * height / megapixel_size)


def validate_input(endpoint: str, data: FluxInput | dict) -> FluxInput:
    """The typed input for `endpoint`, or FalInputError naming every bad field."""
    model = input_model(endpoint)
    if isinstance(data, model):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump(exclude_unset=True)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FalInputError.from_pydantic(endpoint, exc) from None
