"""The base of every config model: unknown keys refused, values checked on assignment.

Example:
    >>> class Ramp(BaseConfig):
    ...     steps: int
    >>> Ramp(steps=3, extra=1)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Ramp
    extra
      Extra inputs are not permitted ...
    ...
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["BaseConfig"]


class BaseConfig(BaseModel):
    """Base of every config model: unknown keys are rejected, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def _one_of(self, group: str, fields: tuple[str, ...], *, required: bool = True) -> None:
        """Raises ValueError unless exactly one (or at most one) of ``fields`` is set."""
        chosen = [f for f in fields if getattr(self, f) is not None]
        if len(chosen) > 1 or (required and not chosen):
            what = "exactly one" if required else "at most one"
            raise ValueError(
                f"{type(self).__name__}: {what} of {list(fields)} ({group}) must be set, "
                f"got {chosen if chosen else 'none'}"
            )
