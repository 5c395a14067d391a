"""The ordered rule list: the first rule whose conditions all hold decides the route."""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from cascade_extproc.config import ConfigError
from cascade_extproc.routing.features import FEATURES
from cascade_extproc.types import Decision, Route

Test = Callable[[Any], bool]

_COMPARE = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
            "gt": operator.gt, "ge": operator.ge}
_ROUTES = {r.value for r in Route}


@dataclass(frozen=True)
class Condition:
    feature: str
    op: str
    arg: Any
    test: Test

    def holds(self, features: dict[str, Any]) -> bool:
        try:
            return self.test(features[self.feature])
        except TypeError:  # e.g. a number compared with a missing value: not a match
            return False


@dataclass(frozen=True)
class Rule:
    name: str
    route: Route
    conditions: tuple[Condition, ...]

    def matches(self, features: dict[str, Any]) -> bool:
        return all(c.holds(features) for c in self.conditions)


class RuleSet:
    def __init__(self, rules: list[Rule]):
        self.rules = rules

    @classmethod
    def from_config(cls, data: list[dict[str, Any]], key: str = "router.rules") -> "RuleSet":
        if not isinstance(data, list):
            raise ConfigError(key, "expected a list of rules")
        rules, names = [], set()
        for i, item in enumerate(data):
            rule = _parse_rule(item, f"{key}[{i}]")
            if rule.name in names:
                raise ConfigError(f"{key}[{i}].name", f"duplicate rule name {rule.name!r}")
            names.add(rule.name)
            rules.append(rule)
        return cls(rules)

    def decide(self, features: dict[str, Any]) -> Decision:
        for rule in self.rules:
            if rule.matches(features):
                used = {c.feature: features.get(c.feature) for c in rule.conditions}
                return Decision(rule.route, rule.name, used, features)
        # Nothing matched: leave the request alone rather than guess.
        return Decision(Route.DIRECT, "no-rule-matched", {}, features)


def _parse_rule(item: Any, key: str) -> Rule:
    if not isinstance(item, dict):
        raise ConfigError(key, "a rule is a mapping with name, route and optional when")
    for k in item:
        if k not in ("name", "route", "when"):
            raise ConfigError(f"{key}.{k}", "unknown key")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}.name", "required, a non-empty string")
    route = item.get("route")
    if route not in _ROUTES:
        raise ConfigError(f"{key}.route", f"one of {sorted(_ROUTES)}")
    when = item.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"{key}.when", "expected a mapping of feature: condition")
    conds = []
    for feature, spec in when.items():
        if feature not in FEATURES:
            raise ConfigError(f"{key}.when.{feature}", f"unknown feature; known: {sorted(FEATURES)}")
        conds.extend(_parse_condition(feature, spec, f"{key}.when.{feature}"))
    return Rule(name, Route(route), tuple(conds))


def _parse_condition(feature: str, spec: Any, key: str) -> list[Condition]:
    """`x` means eq x; `[a, b]` means in; a mapping combines operators (all must hold).
    On list features (keywords, recent_tools) `x` means contains x and `[a, b]` any_of."""
    is_list = FEATURES[feature] is list
    if isinstance(spec, list):
        spec = {"any_of" if is_list else "in": spec}
    elif not isinstance(spec, dict):
        spec = {"contains" if is_list else "eq": spec}
    out = []
    for op, arg in spec.items():
        k = f"{key}.{op}"
        if op in _COMPARE:
            _check_type(feature, arg, k)
            fn = _COMPARE[op]
            out.append(Condition(feature, op, arg, lambda v, fn=fn, arg=arg: fn(v, arg)))
        elif op in ("in", "not_in"):
            if not isinstance(arg, list):
                raise ConfigError(k, "expected a list")
            for i, item in enumerate(arg):
                _check_type(feature, item, f"{k}[{i}]")
            members = frozenset(arg)
            test = (lambda v, m=members: v in m) if op == "in" else (lambda v, m=members: v not in m)
            out.append(Condition(feature, op, arg, test))
        elif op in ("contains", "any_of", "none_of"):
            if FEATURES[feature] is not list:
                raise ConfigError(k, f"{op} applies to list features, and {feature!r} is not one")
            wanted = [arg] if op == "contains" else arg
            if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
                raise ConfigError(k, "expected a string" if op == "contains" else "expected a list of strings")
            members = frozenset(wanted)
            test = (lambda v, m=members: m.isdisjoint(v)) if op == "none_of" else \
                (lambda v, m=members: not m.isdisjoint(v))
            out.append(Condition(feature, op, arg, test))
        elif op == "matches":
            try:
                rx = re.compile(str(arg))
            except re.error as exc:
                raise ConfigError(k, f"bad regex: {exc}") from None
            out.append(Condition(feature, op, arg, lambda v, rx=rx: bool(rx.search(str(v)))))
        else:
            raise ConfigError(k, "unknown operator; use eq ne lt le gt ge in not_in matches contains any_of none_of")
    return out


def _check_type(feature: str, value: Any, key: str) -> None:
    """A condition value must have its feature's type, or the rule could silently never match."""
    expected = FEATURES[feature]
    if expected is list:
        raise ConfigError(key, f"feature {feature!r} is a list: use contains or any_of")
    if expected in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ConfigError(key, f"feature {feature!r} is {expected.__name__}, got {value!r}")
