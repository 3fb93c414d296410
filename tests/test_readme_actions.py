"""The README's "Every action served" tables list exactly the actions each service's
registry serves, so a new or dropped action cannot leave them stale."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fakestor.cloudwatch.actions import ACTIONS as CLOUDWATCH_ACTIONS
from fakestor.ebs.actions import ACTIONS as EBS_ACTIONS
from fakestor.ec2.actions import ACTIONS as EC2_ACTIONS
from fakestor.kms.actions import ACTIONS as KMS_ACTIONS
from fakestor.rbin.actions import ACTIONS as RBIN_ACTIONS

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Every action served"

# The service named in each table's heading, "### EC2 (`ec2`)", and its registry.
REGISTRIES: Mapping[str, Mapping[str, Any]] = {
    "ec2": EC2_ACTIONS,
    "ebs": EBS_ACTIONS,
    "rbin": RBIN_ACTIONS,
    "kms": KMS_ACTIONS,
    "monitoring": CLOUDWATCH_ACTIONS,
}

_HEADING = re.compile(r"^### .*\(`([a-z0-9-]+)`\)\s*$")
_ROW = re.compile(r"^\|([^|]*)\|")


def section_tables(readme: str) -> dict[str, list[str]]:
    """The actions (first cells) of each table in the section, by its heading's service."""
    lines = readme.splitlines()
    start = lines.index(SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tables: dict[str, list[str]] = {}
    service: str | None = None
    for line in lines[start + 1 : end]:
        heading = _HEADING.match(line)
        if heading:
            service = heading.group(1)
            assert service not in tables, f"two tables for {service}"
            tables[service] = []
            continue
        row = _ROW.match(line)
        if row is None or service is None:
            continue
        cell = row.group(1).strip().strip("`")
        if cell == "action" or set(cell) <= set("-: "):
            continue  # the header and its rule
        tables[service].append(cell)
    return tables


@pytest.fixture(scope="module")
def tables() -> dict[str, list[str]]:
    return section_tables(README.read_text())


def test_a_table_per_service(tables: dict[str, list[str]]) -> None:
    assert set(tables) == set(REGISTRIES)


@pytest.mark.parametrize("service", sorted(REGISTRIES))
def test_table_lists_every_action_served(tables: dict[str, list[str]], service: str) -> None:
    listed = tables[service]
    assert len(listed) == len(set(listed)), f"an action listed twice for {service}"
    served = set(REGISTRIES[service])
    assert set(listed) - served == set(), f"listed for {service} but not served"
    assert served - set(listed) == set(), f"served by {service} but not in the README"


def test_section_has_no_unmarked_examples() -> None:
    """devenv/check_readme.py runs every sh, python and yaml block: the section has none."""
    readme = README.read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end >= 0 else None]
    assert not re.search(r"^\s*```(sh|bash|python|yaml|yml)\s*$", section, re.MULTILINE)


def test_every_example_in_the_readme_says_how_it_is_checked() -> None:
    """devenv/check-readme refuses an unmarked block, but runs only with the whole stack up
    (tests/test_devenv.py): a missing marker is caught here first."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "check_readme", README.parent / "devenv" / "check_readme.py"
    )
    assert spec is not None and spec.loader is not None
    check_readme = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_readme", check_readme)  # its dataclasses look it up
    spec.loader.exec_module(check_readme)
    unmarked = [e.line for e in check_readme.parse_examples(README.read_text()) if not e.marker]
    assert unmarked == [], f"README blocks without a check-readme marker at lines {unmarked}"
