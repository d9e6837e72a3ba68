"""Every code name the docs give resolves: dotted names import, `file.py` (`name`, …) lists exist in that
file, and every test a doc cites (`tests/…py::test_…`, or `::test_…` after one) is there."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.joinpath("docs").glob("*.md"), ROOT / "bench" / "RESULTS.md"])
PACKAGES = ("asiri", "core", "tenants", "webhooks", "deliveries")


def resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def dotted_names(text: str) -> set[str]:
    names = set()
    for dotted in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]\w*)+)`", text):
        package, module = dotted.split(".")[:2]
        # `asiri.priority` is a queue, `id.timestamp.body` a format: only names of our modules are code.
        if package in PACKAGES and (ROOT / package / f"{module}.py").exists() | (ROOT / package / module).is_dir():
            names.add(dotted)
    return names


def listed_names(text: str) -> set[str]:
    """`deliveries/services.py` (`event_publish`, `delivery_send_test`): each name must be in that module."""
    names = set()
    for path, inside in re.findall(r"`((?:asiri|core|tenants|webhooks|deliveries)/[\w/]+)\.py` \(([^)]*)\)", text):
        module = path.replace("/", ".")
        names |= {f"{module}.{name}" for name in re.findall(r"`([A-Za-z_]\w*)`", inside)}
    return names


def cited_tests(text: str) -> set[tuple[str, str | None]]:
    cited, last_file = set(), None
    for path, shorthand in re.findall(r"`(tests/[\w/]+\.py)(?:::\w+)?`|`::(test_\w+)`", text):
        if path:
            last_file = path
            cited.add((path, None))
        elif last_file:
            cited.add((last_file, shorthand))
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", text):
        cited.add((path, name))
    return cited


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_name_in_the_docs_resolves(doc):
    text = doc.read_text()
    missing = sorted(name for name in dotted_names(text) | listed_names(text) if not resolve(name))
    assert not missing, f"{doc.name} names code that does not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_test_the_docs_cite_exists(doc):
    missing = []
    for path, name in sorted(cited_tests(doc.read_text()), key=str):
        source = ROOT / path
        if not source.exists() or (name and not re.search(rf"^(async )?def {name}\(", source.read_text(), re.M)):
            missing.append(f"{path}::{name}" if name else path)
    assert not missing, f"{doc.name} cites tests that do not exist: {missing}"


def test_the_checks_find_what_they_look_for():
    text = "`deliveries.engine.pump` `deliveries/services.py` (`event_publish`) `tests/test_health.py` `::test_x`"
    assert dotted_names(text) == {"deliveries.engine.pump"}
    assert listed_names(text) == {"deliveries.services.event_publish"}
    assert cited_tests(text) == {("tests/test_health.py", None), ("tests/test_health.py", "test_x")}
    assert not resolve("deliveries.services.delivery_attempt")
