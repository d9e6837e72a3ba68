"""Settings as a fresh process reads them from the environment, for tests of what it accepts or refuses."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT

CHECK = "import django; django.setup(); from django.conf import settings; print(settings.{})"
GOOD_KEY = "settings-test-key-that-is-long-and-varied-enough-0123456789"


def start(setting: str = "DEBUG", **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ASIRI_"))}
    base.update({"DJANGO_SETTINGS_MODULE": "asiri.settings", "DJANGO_SECRET_KEY": GOOD_KEY, **env})
    return subprocess.run(
        [sys.executable, "-c", CHECK.format(setting)], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )
