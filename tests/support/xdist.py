"""With pytest-xdist (`make test` runs two workers), each worker gets a Redis database of its own for the broker.

A Celery worker one pytest worker starts must not take the other's wake-ups and test sends, and `empty_broker`
must not flush the other's queue; the suite's database is 15, its workers take 14, 13, … PostgreSQL needs nothing:
pytest-django gives each worker a test database of its own. Loaded with `-p`, so it runs before Django reads its
settings, and every process a test starts inherits the result.
"""

import os

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_url = os.environ.get("CELERY_BROKER_URL", "")
_base, _, _db = _url.rpartition("/")
if _worker.startswith("gw") and _url.startswith("redis://") and _db.isdigit():
    os.environ["CELERY_BROKER_URL"] = f"{_base}/{int(_db) - 1 - int(_worker[2:])}"
