"""The action catalog: what may be recommended, where, to whom, and what it is worth.

The catalog is a YAML file validated by pydantic (a typo is an error, not a default).
Each action's eligibility is a CEL expression over the customer's features, compiled
once at load and checked against a never-seen customer on every channel, so that a rule
naming an unknown feature or returning a non-boolean fails at load, naming the action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cel
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.events import IDENTIFIER_PATTERN, Channel
from features.registry import default_features


class ActionKind(StrEnum):
    OFFER = "offer"
    CROSS_SELL = "cross_sell"
    RETENTION = "retention"
    SERVICE = "service"
    ENGAGEMENT = "engagement"


class ActionSpec(BaseModel):
    """One action as written in the catalog file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=IDENTIFIER_PATTERN)
    name: str = Field(min_length=1)
    kind: ActionKind
    product: str = Field(min_length=1)
    channels: list[Channel] = Field(min_length=1)
    value: float = Field(gt=0, description="expected value of one acceptance")
    base_rate: float = Field(gt=0, le=1, description="prior acceptance probability")
    eligibility: str = Field(default="true", description="CEL expression over features")
    reason: str = Field(min_length=1, description="why it is recommended, in plain words")


class CatalogSpec(BaseModel):
    """The catalog file: a version and a list of actions with unique ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    actions: list[ActionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> CatalogSpec:
        seen: set[str] = set()
        for action in self.actions:
            if action.id in seen:
                raise ValueError(f"action id {action.id!r} appears more than once")
            seen.add(action.id)
        return self


class CatalogError(ValueError):
    """The catalog cannot be loaded; the message names the file and the bad definition."""


@dataclass(frozen=True, slots=True)
class Action:
    """A loaded action: its specification and its compiled eligibility rule."""

    spec: ActionSpec
    rule: cel.Program

    @property
    def id(self) -> str:
        return self.spec.id

    def is_eligible(self, context: cel.Context) -> bool:
        """Evaluate the eligibility rule against one decision's CEL context."""
        return bool(self.rule.execute(context))


@dataclass(frozen=True, slots=True)
class Catalog:
    """All actions, in file order, with the channels each may be shown on."""

    version: int
    actions: tuple[Action, ...]

    def for_channel(self, channel: Channel) -> list[Action]:
        """Actions allowed on a channel."""
        return [action for action in self.actions if channel in action.spec.channels]

    def base_rates(self) -> Mapping[str, float]:
        return {action.id: action.spec.base_rate for action in self.actions}


def rule_context(features: Mapping[str, float | int], channel: Channel) -> cel.Context:
    """The variables a rule sees: every feature by name, plus `channel`."""
    return cel.Context(variables={**features, "channel": channel.value})


def _compile_rule(spec: ActionSpec) -> cel.Program:
    try:
        program = cel.compile(spec.eligibility)
    except ValueError as error:
        raise CatalogError(f"action {spec.id!r}: eligibility does not parse: {error}") from error
    for channel in spec.channels:
        try:
            result = program.execute(rule_context(default_features(), channel))
        except (RuntimeError, TypeError) as error:
            raise CatalogError(
                f"action {spec.id!r}: eligibility {spec.eligibility!r} fails: {error}"
            ) from error
        if not isinstance(result, bool):
            raise CatalogError(
                f"action {spec.id!r}: eligibility {spec.eligibility!r} must be true or false, "
                f"got {result!r}"
            )
    return program


def build_catalog(document: Any) -> Catalog:
    """Validate a decoded catalog document and compile its rules."""
    try:
        spec = CatalogSpec.model_validate(document)
    except ValidationError as error:
        raise CatalogError(str(error)) from error
    return Catalog(
        version=spec.version,
        actions=tuple(Action(spec=action, rule=_compile_rule(action)) for action in spec.actions),
    )


def load_catalog(path: Path) -> Catalog:
    """Load, validate and compile a catalog file; errors name the file."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CatalogError(f"{path}: cannot read catalog: {error}") from error
    try:
        return build_catalog(document)
    except CatalogError as error:
        raise CatalogError(f"{path}: {error}") from error
