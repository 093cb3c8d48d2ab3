"""The deploy YAML's building blocks: names, slugs, integers that refuse booleans, strict sections, paths relative to the YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationInfo

Name = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")]
Slug = Annotated[StrictStr, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]


def _not_bool(value: object) -> object:
    # pydantic's lax int takes true/false as 1/0, so `gpus: yes` would silently mean one GPU
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {str(value).lower()} (a boolean)")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_not_bool)]
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_not_bool)]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = Path(path).expanduser()
    return path if path.is_absolute() or base is None else (Path(base) / path).resolve()
