"""The action catalog: what may be recommended, where, to whom, and what it is worth.

The catalog is a YAML file validated by pydantic (a typo is an error, not a default).
Each action's eligibility is a CEL expression over the customer's features, compiled
once at load. Every variable it names must be a feature or `channel` (checked on the
expression's text, so a misspelt name fails at load even behind a short-circuit), and
it must return a boolean for a never-seen customer on every channel; errors name the
action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cel
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.events import IDENTIFIER_PATTERN, Channel
from features.reading import default_features


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


#: What evaluating a CEL rule can raise on values it cannot handle.
RULE_ERRORS = (RuntimeError, TypeError, ValueError, ArithmeticError)


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
        """Evaluate the eligibility rule; only a boolean `true` makes the action eligible.

        Raises one of RULE_ERRORS when the rule cannot be evaluated on these values.
        """
        return self.rule.execute(context) is True


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


def rule_context(features: Mapping[str, float | int | str], channel: Channel) -> cel.Context:
    """The variables a rule sees: every feature by name, plus `channel`."""
    return cel.Context(variables={**features, "channel": channel.value})


#: String literals (any quoting), removed before looking for variable names.
_CEL_STRING = re.compile(
    r"[rRbB]{0,2}(?:'''.*?'''"
    r'|""".*?"""'
    r"|'(?:\\.|[^'\\])*'"
    r'|"(?:\\.|[^"\\])*")',
    re.S,
)
#: A name that is not a field selection (`.name`) nor a function call (`name(`).
_CEL_VARIABLE = re.compile(r"(?<![.\w])([A-Za-z_]\w*)\b(?!\s*\()")
#: Macros bind their first argument as a local name: `list.exists(x, x > 1)`.
_CEL_MACRO_BINDING = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)")
_CEL_WORDS = frozenset({"true", "false", "null", "in"})


def rule_variables(expression: str) -> set[str]:
    """The variables a CEL expression reads from its context, found in its text."""
    code = _CEL_STRING.sub('""', expression)
    local = set(_CEL_MACRO_BINDING.findall(code))
    return {name for name in _CEL_VARIABLE.findall(code) if name not in _CEL_WORDS | local}


#: Scores the API adds to the features before deciding (models' outputs, computed when the
#: customer is read), with the values a rule is checked against at load time.
MODEL_SCORES: dict[str, float | int] = {"churn_risk": 0.0, "segment": -1}


def _rule_defaults() -> dict[str, float | int | str]:
    return {**default_features(), **MODEL_SCORES}


def _compile_rule(spec: ActionSpec) -> cel.Program:
    unknown = rule_variables(spec.eligibility) - set(_rule_defaults()) - {"channel"}
    if unknown:
        raise CatalogError(
            f"action {spec.id!r}: eligibility {spec.eligibility!r} names unknown "
            f"variable(s) {sorted(unknown)}; it may use the features, `churn_risk`, "
            "`segment` and `channel`"
        )
    try:
        program = cel.compile(spec.eligibility)
    except ValueError as error:
        raise CatalogError(f"action {spec.id!r}: eligibility does not parse: {error}") from error
    for channel in spec.channels:
        try:
            result = program.execute(rule_context(_rule_defaults(), channel))
        except RULE_ERRORS as error:
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
        raise CatalogError(_describe_catalog_errors(error, document)) from error
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


def _describe_catalog_errors(error: ValidationError, document: Any) -> str:
    """One line per problem, naming the action by id where the document gives one."""
    lines = []
    for detail in error.errors(include_url=False):
        location = list(detail["loc"])
        where = ".".join(map(str, location)) or "catalog"
        if len(location) >= 2 and location[0] == "actions" and isinstance(location[1], int):
            action = _action_id_at(document, location[1])
            field = ".".join(map(str, location[2:])) or "action"
            where = f"action {action!r} (actions[{location[1]}]) {field}"
        lines.append(f"{where}: {detail['msg']}")
    return "; ".join(lines)


def _action_id_at(document: Any, index: int) -> str:
    try:
        return str(document["actions"][index]["id"])
    except (KeyError, IndexError, TypeError):
        return f"#{index}"
