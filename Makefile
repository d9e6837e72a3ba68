# ASIRI Webhooks: `make run` (local, embedded SQLite + filesystem broker) and `make test` (PostgreSQL + Redis).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Keyed on both files: a change to either reinstalls. Production installs requirements.txt only.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

# Local conveniences are opt-in: only `make run` turns them on.
LOCAL_ENV := env -u DATABASE_URL -u CELERY_BROKER_URL PATH="$(BIN):$$PATH" \
	DJANGO_DEBUG=1 ASIRI_LOG_FORMAT=plain ASIRI_ALLOW_PRIVATE_URLS=1 ASIRI_REQUIRE_HTTPS=0 HOST=127.0.0.1 PORT=$${PORT:-8000}

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/asiri
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
# Most of the suite waits on real processes: two pytest-xdist workers (a test database and a Redis database each,
# tests/support/xdist.py) take it from 16 minutes to under 10 on this project's 2-core CI machine. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
TEST_ENV := PATH="$(BIN):$$PATH" DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
	DJANGO_SECRET_KEY=test-only-secret-key-never-used-in-production-0123456789 DJANGO_DEBUG=0 DJANGO_ALLOWED_HOSTS=testserver,localhost,127.0.0.1

# The pure tests (tests/unit) need no server: an in-memory database and broker that they never touch.
UNIT_ENV := PATH="$(BIN):$$PATH" DATABASE_URL=sqlite://:memory: CELERY_BROKER_URL=memory:// DJANGO_DEBUG=0 \
	DJANGO_SECRET_KEY=unit-tests-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz

.PHONY: install run manage test test-unit fuzz lint services fmt clean bench bench-admin bench-recovery bench-cpu

# The development set (the service's requirements, the test tools and honcho, which `make run` uses).
$(STAMP): requirements.txt requirements-dev.txt
	@echo "==> Creating $(VENV) and installing requirements-dev.txt"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	@$(LOCAL_ENV) $(BIN)/python manage.py migrate --noinput
	@$(LOCAL_ENV) $(BIN)/python manage.py load_event_types webhooks/fixtures/event_types.json
	@$(LOCAL_ENV) $(BIN)/python manage.py collectstatic --noinput -v0
	@$(LOCAL_ENV) $(BIN)/python manage.py demo_setup
	@# Every process counts into one fresh directory, which /metrics adds up (docs/operations.md).
	@rm -rf var/prometheus && mkdir -p var/prometheus
	@$(LOCAL_ENV) PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/prometheus $(BIN)/honcho start web worker priority beat

# An operator command against `make run`'s database, e.g. make manage ARGS="create_tenant acme".
manage: install
	@$(LOCAL_ENV) $(BIN)/python manage.py $(ARGS)

services:
	@bash scripts/ensure-services

test: install services
	@$(BIN)/ruff check --quiet . && $(BIN)/ruff format --check --quiet .
	@$(TEST_ENV) $(BIN)/python -m pytest -p tests.support.xdist -n $(TEST_WORKERS) --dist loadfile

# The inner loop: pure tests in seconds, with nothing started.
test-unit: install
	@$(UNIT_ENV) $(BIN)/python -m pytest tests/unit -q

# Schemathesis alone, longer: 1000 new examples per operation (make test runs 100, the same each time).
fuzz: install services
	@$(TEST_ENV) ASIRI_FUZZ_EXAMPLES=$${ASIRI_FUZZ_EXAMPLES:-1000} ASIRI_FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/fuzz

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

fmt: install
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache

bench: install services
	@PATH="$(BIN):$$PATH" $(BIN)/python bench/delivery.py

bench-admin: install services
	@PATH="$(BIN):$$PATH" $(BIN)/python bench/admin.py

bench-recovery: install services
	@PATH="$(BIN):$$PATH" $(BIN)/python bench/recovery.py

bench-cpu: install services
	@PATH="$(BIN):$$PATH" $(BIN)/python bench/cpu.py
