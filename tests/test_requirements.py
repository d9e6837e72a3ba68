"""Production installs requirements.txt only: the service's own packages, no test or development tool."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import packages_distributions

from tests.support.processes import ROOT, service_env

DEVELOPMENT_TOOLS = {
    "pytest",
    "pytest-django",
    "pytest-xdist",
    "schemathesis",
    "hypothesis",
    "playwright",
    "ruff",
    "py-spy",
    "honcho",
}

# Runs the service's imports with every development-only package made unimportable.
WITHOUT_DEVELOPMENT_PACKAGES = """
import importlib, importlib.abc, pkgutil, sys

BLOCKED = set(sys.argv[1].split(","))


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} comes from requirements-dev.txt only")
        return None


sys.meta_path.insert(0, Blocked())
import django

django.setup()
for app in ("asiri", "tenants", "webhooks", "deliveries"):
    for module in pkgutil.walk_packages([app], prefix=app + "."):
        importlib.import_module(module.name)
from django.urls import get_resolver
from drf_spectacular.generators import SchemaGenerator

import asiri.wsgi, celery.apps.beat, celery.apps.worker, django.db.backends.postgresql.base, gunicorn.app.wsgiapp
import kombu.transport.redis

get_resolver().url_patterns
SchemaGenerator().get_schema(request=None, public=True)
print("imported", len(sys.modules), "modules")
"""


def pins(name: str) -> dict[str, str]:
    """Distribution name (normalised) → pinned version, for the lines of one requirements file."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-r ")):
            continue
        distribution, separator, version = line.partition("==")
        assert separator and version, f"{name}: {line!r} is not pinned with =="
        found[distribution.strip().lower().replace("_", "-")] = version.strip()
    return found


def test_production_requirements_carry_no_development_tool():
    production, development = pins("requirements.txt"), pins("requirements-dev.txt")
    assert sorted(DEVELOPMENT_TOOLS & production.keys()) == []
    assert DEVELOPMENT_TOOLS <= development.keys()
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert not production.keys() & development.keys()  # each package pinned once


def test_the_service_imports_nothing_from_the_development_requirements():
    development = pins("requirements-dev.txt").keys()
    blocked = sorted(
        module
        for module, distributions in packages_distributions().items()
        if all(d.lower().replace("_", "-") in development for d in distributions)
    )
    assert {"pytest", "schemathesis", "hypothesis", "playwright", "honcho", "standardwebhooks"} <= set(blocked)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_DEVELOPMENT_PACKAGES, ",".join(blocked)],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported" in result.stdout
