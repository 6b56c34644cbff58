"""What every part of the config schema is built of: names and strict models.

Apart from ``config.py`` so that the schema's parts in their own modules
(``secgroups.py``) use the same definitions without importing the whole.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
Name = Annotated[str, Field(pattern=NAME_RE)]


class Strict(BaseModel):
    """Unknown keys are errors, and a validated value never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
