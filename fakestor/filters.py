"""EC2 `Filter.N.Name` / `Filter.N.Value.M` matching, with `*` and `?` wildcards.

A resource offers a mapping from filter name to its values; a resource matches
when, for every filter, one of its values matches one of the filter's values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

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


def matches(values: FilterValues, filters: Iterable[Filter]) -> bool:
    for flt in filters:
        candidates = values.get(flt.name, ())
        if not any(
            fnmatchcase(candidate, pattern) for candidate in candidates for pattern in flt.values
        ):
            return False
    return True
