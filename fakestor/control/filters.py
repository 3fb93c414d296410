"""EC2 `Filter.N.Name` / `Filter.N.Value.M` matching, with EC2's wildcards.

EC2: `*` matches zero or more characters, `?` zero or one, and a backslash makes
the next character literal (`\\*`, `\\?`, `\\\\`); nothing else is special.

A resource offers a mapping from filter name to its values; a resource matches
when, for every filter, one of its values matches one of the filter's values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fakestor import errors


@dataclass(frozen=True)
class Filter:
    name: str
    values: Sequence[str]


FilterValues = Mapping[str, Sequence[str]]


def check_filters(filters: Iterable[Filter], known: Iterable[str]) -> None:
    """Refuse filter names the resource does not support, as EC2 does."""
    known_names = set(known)
    for flt in filters:
        if flt.name.startswith("tag:") and len(flt.name) > 4:
            continue
        if flt.name not in known_names:
            raise errors.InvalidParameterValue(
                f"The filter '{flt.name}' is invalid. Valid filters: "
                f"{', '.join(sorted(known_names | {'tag:<key>'}))}."
            )


def tag_values(tags: Mapping[str, str]) -> dict[str, list[str]]:
    """The tag-based filter values every taggable resource supports."""
    values: dict[str, list[str]] = {f"tag:{key}": [value] for key, value in tags.items()}
    values["tag-key"] = list(tags)
    values["tag-value"] = list(tags.values())
    return values


@lru_cache(maxsize=1024)
def _pattern(value: str) -> re.Pattern[str]:
    parts: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".?")
        else:
            parts.append(re.escape(char))
    if escaped:  # a trailing backslash stands for itself
        parts.append(re.escape("\\"))
    return re.compile("".join(parts), re.DOTALL)


def wildcard_match(candidate: str, value: str) -> bool:
    """Whether `candidate` matches the filter value `value` under EC2's wildcard rules."""
    return _pattern(value).fullmatch(candidate) is not None


def matches(values: FilterValues, filters: Iterable[Filter]) -> bool:
    for flt in filters:
        candidates = values.get(flt.name, ())
        if not any(
            wildcard_match(candidate, pattern) for candidate in candidates for pattern in flt.values
        ):
            return False
    return True
