"""Every code name the docs give resolves: dotted names import, `file.py` (`name`, …) lists exist in that
file, and every test a doc cites (`tests/…py::test_…`, or `::test_…` after one) is there."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from webhooks.catalog import data_errors

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.joinpath("docs").glob("*.md"), ROOT / "bench" / "RESULTS.md"])
PACKAGES = ("asiri", "core", "tenants", "webhooks", "deliveries")
CATALOG = ROOT / "webhooks" / "fixtures" / "event_types.json"


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


# A `curl` to `POST /v1/events` (or `/batch`) and its `-d` body, single-quoted or double-quoted with \" inside,
# over the lines a trailing backslash continues.
PUBLISH = re.compile(
    r"curl (?:[^\n]|\\\n)*?/v1/events(?:/batch)?\b(?:[^\n]|\\\n)*?"
    r"-d (?:'(?P<single>[^']*)'|\"(?P<double>(?:\\.|[^\"\\])*)\")"
)


def published_events(text: str) -> list[dict]:
    """The events each README `curl` publishes, a shell variable (`$1`) read as the number 1."""
    events = []
    for match in PUBLISH.finditer(text):
        body = match["single"] if match["single"] is not None else match["double"].replace('\\"', '"')
        body = json.loads(re.sub(r"\$(?:\{\w+\}|\w+)", "1", body))
        events += body.get("events", [body])
    return events


def test_every_event_the_readme_publishes_is_one_the_shipped_catalog_accepts():
    # `make run` loads this catalog, so a walk-through whose events break it gets a 400 at each publish.
    catalog = {entry["name"]: entry["schema"] for entry in json.loads(CATALOG.read_text())}
    events = published_events((ROOT / "README.md").read_text())
    assert len(events) >= 2, events  # the first walk-through and the outage one
    for event in events:
        assert event["type"] in catalog, event
        assert data_errors(catalog[event["type"]], event["data"]) == [], event


def test_the_publish_finder_reads_both_quotings():
    text = (
        'curl -s -X POST http://h/v1/events -H x \\\n  -d \'{"type": "a.b", "data": {"k": 2}}\'\n'
        'publish() { curl -s -X POST http://h/v1/events/batch -d "{\\"events\\": [{\\"type\\": \\"c.d\\", '
        '\\"data\\": {\\"n\\": $1}}]}"; echo; }\n'
    )
    assert published_events(text) == [{"type": "a.b", "data": {"k": 2}}, {"type": "c.d", "data": {"n": 1}}]
