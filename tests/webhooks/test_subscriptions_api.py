from __future__ import annotations

import base64
import json

import pytest
from django.utils import timezone

from tests.support import nesting
from webhooks.models import Subscription

URL = "/v1/webhooks/subscriptions"
PUBLIC = "fields returned by every read"
READ_FIELDS = {
    "id",
    "url",
    "events",
    "description",
    "active",
    "metadata",
    "headers",
    "filter",
    "deprecated_events",
    "rate_limit",
    "created_at",
    "updated_at",
    "disabled_reason",
}


def create(api, **body):
    body.setdefault("url", "https://hooks.example.com/asiri")
    return api.post(URL, body, format="json")


def test_it_creates_with_defaults_and_shows_the_secret_once(api, alice):
    response = create(api)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == READ_FIELDS | {"secret"}
    assert body["id"].startswith("sub_") and len(body["id"]) > 20
    assert body["events"] == ["*"]
    assert body["description"] == "" and body["active"] is True and body["metadata"] == {}
    assert body["disabled_reason"] is None
    assert body["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(body["secret"][6:])) <= 32
    fetched = api.get(f"{URL}/{body['id']}").json()
    assert "secret" not in fetched and set(fetched) == READ_FIELDS
    listed = api.get(URL).json()["results"][0]
    assert "secret" not in listed
    patched = api.patch(f"{URL}/{body['id']}", {"description": "x"}, format="json").json()
    assert "secret" not in patched


def test_it_never_issues_sequential_ids(api):
    ids = [create(api).json()["id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert not any(i[4:].isdigit() for i in ids)


def test_it_collapses_duplicate_patterns_keeping_order(api):
    response = create(api, events=["invoice.paid", "invoice.*", "invoice.paid", "*"])
    assert response.json()["events"] == ["invoice.paid", "invoice.*", "*"]


def test_it_stores_everything_it_was_given(api):
    response = create(api, events=["user.created"], description="CRM sync", active=False, metadata={"team": "crm"})
    body = response.json()
    assert (body["events"], body["description"], body["active"], body["metadata"]) == (
        ["user.created"],
        "CRM sync",
        False,
        {"team": "crm"},
    )


def test_it_lists_live_subscriptions_newest_first_in_the_paged_envelope(api):
    ids = [create(api).json()["id"] for _ in range(3)]
    api.delete(f"{URL}/{ids[1]}")
    body = api.get(URL).json()
    assert set(body) == {"next", "previous", "results"}
    assert [s["id"] for s in body["results"]] == [ids[2], ids[0]]


def test_it_pages_the_list(api):
    ids = [create(api).json()["id"] for _ in range(5)]
    first = api.get(URL, {"limit": 2}).json()
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()
    seen = [s["id"] for page in (first, second, third) for s in page["results"]]
    assert seen == list(reversed(ids))
    assert third["next"] is None


def test_it_patches_only_what_it_was_sent(api):
    sub = create(api, description="before", metadata={"a": "1"}).json()
    response = api.patch(f"{URL}/{sub['id']}", {"events": ["order.*"]}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["events"] == ["order.*"]
    assert body["description"] == "before" and body["metadata"] == {"a": "1"} and body["url"] == sub["url"]
    assert body["updated_at"] > sub["updated_at"]


def test_a_rejected_patch_changes_nothing(api):
    sub = create(api, description="before").json()
    before = Subscription.objects.filter(pk=sub["id"]).values().get()
    response = api.patch(f"{URL}/{sub['id']}", {"description": "after", "url": "ftp://nope"}, format="json")
    assert response.status_code == 400
    assert "url" in response.json()
    assert Subscription.objects.filter(pk=sub["id"]).values().get() == before


def test_reenabling_clears_the_systems_reason(api):
    sub = create(api).json()
    Subscription.objects.filter(pk=sub["id"]).update(active=False, disabled_reason="Endpoint answered 410 Gone.")
    assert api.get(f"{URL}/{sub['id']}").json()["disabled_reason"] == "Endpoint answered 410 Gone."
    body = api.patch(f"{URL}/{sub['id']}", {"active": True}, format="json").json()
    assert body["active"] is True and body["disabled_reason"] is None


def test_delete_hides_it_everywhere_but_keeps_the_history(api, django_capture_on_commit_callbacks):
    sub = create(api).json()
    with django_capture_on_commit_callbacks(execute=False):
        api.post(f"{URL}/{sub['id']}/test")
    assert api.delete(f"{URL}/{sub['id']}").status_code == 204
    for method, path in [("get", ""), ("patch", ""), ("delete", ""), ("get", "/deliveries"), ("post", "/test")]:
        response = getattr(api, method)(
            f"{URL}/{sub['id']}{path}", {"active": True} if method == "patch" else None, format="json"
        )
        assert response.status_code == 404, (method, path)
    assert api.get(URL).json()["results"] == []
    row = Subscription.objects.get(pk=sub["id"])
    assert row.deleted_at is not None and not row.active
    assert row.deliveries.count() == 1


# --- The validation catalogue ---------------------------------------------------------------

BAD_BODIES = [
    ("url", {"url": None}),
    ("url", {"url": 42}),
    ("url", {"url": ""}),
    ("url", {"url": "hooks.example.com/no-scheme"}),
    ("url", {"url": "/relative/path"}),
    ("url", {"url": "ftp://hooks.example.com/"}),
    ("url", {"url": "javascript:alert(1)"}),
    ("url", {"url": "https:///no-host"}),
    ("url", {"url": "https://user:pass@hooks.example.com/"}),
    ("url", {"url": "https://user@hooks.example.com/"}),
    ("url", {"url": "http://hooks.example.com/"}),
    ("url", {"url": "https://hooks.example.com:99999/"}),
    ("url", {"url": "https://hooks.example.com:abc/"}),
    ("url", {"url": "https://hooks.example.com/" + "a" * 2030}),
    ("url", {"url": "https://hooks.example.com/a b"}),
    ("url", {"url": "https://hooks.example.com/\x00"}),
    ("events", {"events": []}),
    ("events", {"events": "invoice.paid"}),
    ("events", {"events": [1]}),
    ("events", {"events": ["Invoice.Paid"]}),
    ("events", {"events": ["invoice..paid"]}),
    ("events", {"events": ["invoice.*.paid"]}),
    ("events", {"events": ["*.paid"]}),
    ("events", {"events": ["invoice*"]}),
    ("events", {"events": ["invoice."]}),
    ("events", {"events": [".invoice"]}),
    ("events", {"events": ["inv oice"]}),
    ("events", {"events": ["**"]}),
    ("events", {"events": [f"e{i}" for i in range(101)]}),
    ("events", {"events": None}),
    ("description", {"description": "x" * 1001}),
    ("description", {"description": 5}),
    ("description", {"description": "nul\x00byte"}),
    ("active", {"active": "perhaps"}),
    ("active", {"active": None}),
    ("metadata", {"metadata": []}),
    ("metadata", {"metadata": "a=b"}),
    ("metadata", {"metadata": {"n": 1}}),
    ("metadata", {"metadata": {"n": None}}),
    ("metadata", {"metadata": {"nested": {"a": "b"}}}),
    ("metadata", {"metadata": {"k" * 41: "v"}}),
    ("metadata", {"metadata": {"k": "v" * 501}}),
    ("metadata", {"metadata": {f"k{i}": "v" for i in range(21)}}),
    ("metadata", {"metadata": {"k": "nul\x00"}}),
    ("metadata", {"metadata": {"k\x00": "v"}}),
    ("rate_limit", {"rate_limit": 0}),
    ("rate_limit", {"rate_limit": -1}),
    ("rate_limit", {"rate_limit": 10_001}),
    ("rate_limit", {"rate_limit": "5"}),
    ("rate_limit", {"rate_limit": 5.5}),
    ("rate_limit", {"rate_limit": True}),
    ("rate_limit", {"rate_limit": [5]}),
]


@pytest.mark.parametrize(("field", "body"), BAD_BODIES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_BODIES)])
def test_it_rejects_bad_fields_by_name(api, field, body):
    payload = {"url": "https://hooks.example.com/ok", **body}
    response = api.post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert Subscription.objects.count() == 0


def test_it_accepts_the_limits_exactly(api):
    response = create(
        api,
        url="https://hooks.example.com/" + "a" * (2048 - len("https://hooks.example.com/")),
        events=[f"e{i}.x_y.*" for i in range(100)],
        description="d" * 1000,
        metadata={f"{i:02d}" + "k" * 38: "v" * 500 for i in range(20)},
        rate_limit=10_000,
    )
    assert response.status_code == 201, response.content
    assert create(api, rate_limit=1).json()["rate_limit"] == 1


def test_a_rate_limit_is_optional_and_can_be_set_and_lifted(api):
    created = create(api).json()
    assert created["rate_limit"] is None
    path = f"{URL}/{created['id']}"
    assert api.patch(path, {"rate_limit": 25}, format="json").json()["rate_limit"] == 25
    assert api.patch(path, {"description": "still limited"}, format="json").json()["rate_limit"] == 25
    assert api.patch(path, {"rate_limit": None}, format="json").json()["rate_limit"] is None
    assert Subscription.objects.get(pk=created["id"]).rate_limit is None


def test_it_requires_a_url(api):
    response = api.post(URL, {}, format="json")
    assert response.status_code == 400 and "url" in response.json()


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b'{"url": "https://hooks.example.com/\\ud800"}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"url=https://hooks.example.com/", "application/x-www-form-urlencoded"),
    ],
)
def test_it_rejects_bodies_that_are_not_json_objects(api, raw, content_type):
    response = api.generic("POST", URL, raw, content_type=content_type)
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.content
    assert response["Content-Type"] == "application/json"
    assert Subscription.objects.count() == 0


def test_it_answers_413_to_a_body_over_a_megabyte(api):
    raw = b'{"url": "https://hooks.example.com/", "description": "' + b"x" * 1_000_001 + b'"}'
    response = api.generic("POST", URL, raw, content_type="application/json")
    assert response.status_code == 413
    assert "detail" in response.json()


BLOCKED_TARGETS = [
    "https://127.0.0.1/",
    "https://127.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0177.0.0.1/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::]/",
    "https://0.0.0.0/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://app.localhost/",
    "https://10.0.0.1/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/",
    "https://224.0.0.1/",
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://[fd00::1]:8443/",
    "https://metadata.internal.test/",
    "https://intranet.test/",
    "https://mixed.test/",
    "https://[64:ff9b::7f00:1]/",
    "https://[2002:7f00:1::]/",
    "https://198.18.0.1/",
]


UNDELIVERABLE = {"url": ["Cannot be delivered to: does not resolve to a public address."]}


@pytest.mark.parametrize("url", BLOCKED_TARGETS)
def test_it_refuses_private_targets(api, url):
    response = create(api, url=url)
    assert response.status_code == 400, url
    assert response.json() == UNDELIVERABLE


def test_a_name_that_does_not_resolve_gets_the_answer_a_private_one_gets(api):
    # Different answers would let a tenant map the internal DNS, one guessed name at a time.
    existing = create(api).json()
    answers = []
    for url in ("https://intranet.test/hook", "https://does-not-exist.test/hook"):
        created = create(api, url=url)
        patched = api.patch(f"{URL}/{existing['id']}", {"url": url}, format="json")
        answers.append((created.status_code, created.content, patched.status_code, patched.content))
    assert answers[0] == answers[1]
    assert answers[0][0] == answers[0][2] == 400
    assert json.loads(answers[0][1]) == UNDELIVERABLE
    assert Subscription.objects.get().url == existing["url"]


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "https://93.184.215.14/x",
        "https://[2606:4700::1111]/x",
        "https://api.example.org:8443/x?a=1",
    ],
)
def test_it_accepts_public_targets(api, url):
    assert create(api, url=url).status_code == 201


def test_private_targets_and_http_are_opt_in(api, settings):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    assert create(api, url="http://127.0.0.1:8000/hook").status_code == 201
    assert create(api, url="http://localhost/hook").status_code == 201
    assert create(api, url="ftp://localhost/hook").status_code == 400


def test_a_patch_is_validated_like_a_create(api):
    sub = create(api).json()
    response = api.patch(f"{URL}/{sub['id']}", {"url": "https://10.0.0.1/"}, format="json")
    assert response.status_code == 400 and "url" in response.json()


def test_hosts_that_normalise_to_an_address_are_refused(api):
    # Unicode "segmented digits" become 169.254.169.254 once IDNA-normalised, as aiohttp does.
    response = create(
        api,
        url="https://\U0001fbf1\U0001fbf6\U0001fbf9.\U0001fbf2\U0001fbf5\U0001fbf4."
        "\U0001fbf1\U0001fbf6\U0001fbf9.\U0001fbf2\U0001fbf5\U0001fbf4/",
    )
    assert response.status_code == 400 and "url" in response.json()


def test_deeply_nested_json_is_a_400(api):
    raw = b'{"url": "https://hooks.example.com/", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = api.generic("POST", URL, raw, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("kind", ["dict", "list"])
@pytest.mark.parametrize("levels", nesting.DEPTHS)
def test_deeply_nested_metadata_is_a_400_naming_the_field(api, method, kind, levels, caplog):
    sub = create(api).json()
    before = Subscription.objects.filter(pk=sub["id"]).values().get()
    path = URL if method == "POST" else f"{URL}/{sub['id']}"
    raw = '{"url": "https://hooks.example.com/", "metadata": {"a": ' + nesting.nested(kind, levels - 1) + "}}"
    response = api.generic(method, path, raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["metadata"], response.json()
    assert Subscription.objects.count() == 1
    assert Subscription.objects.filter(pk=sub["id"]).values().get() == before
    nesting.assert_no_traceback_logged(caplog)


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("dict", {"k": ["Must not be nested more than 64 levels deep."]}),  # the member that is too deep
        ("list", {"detail": "Request body is nested more than 64 levels deep."}),  # no member to name
    ],
)
def test_a_body_too_deep_for_the_json_module_names_the_limit(api, kind, answer, caplog):
    response = api.generic("POST", URL, nesting.nested(kind, 5000), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == answer
    nesting.assert_no_traceback_logged(caplog)


def test_reenabling_restarts_the_failure_clock(api):
    sub = create(api).json()
    Subscription.objects.filter(pk=sub["id"]).update(active=False, disabled_reason="x", failing_since=timezone.now())
    api.patch(f"{URL}/{sub['id']}", {"active": True}, format="json")
    assert Subscription.objects.get(pk=sub["id"]).failing_since is None


def test_a_tenant_at_its_limit_gets_a_409_naming_it(api, charlie, client_for, settings):
    settings.ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT = 3
    ids = [create(api).json()["id"] for _ in range(3)]
    refused = create(api)
    assert refused.status_code == 409
    assert refused.json() == {"detail": "This tenant may have at most 3 subscriptions: delete one to create another."}
    assert Subscription.objects.count() == 3
    assert create(client_for(charlie)).status_code == 201  # the limit is per tenant
    api.delete(f"{URL}/{ids[0]}")  # deleted ones do not count
    assert create(api).status_code == 201
    assert create(api).status_code == 409


def test_a_tenants_own_limit_overrides_the_default(api, alice, settings):
    settings.ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT = 1
    alice.max_subscriptions = 2
    alice.save()
    assert [create(api).status_code for _ in range(3)] == [201, 201, 409]
    assert "at most 2 subscriptions" in create(api).json()["detail"]
    alice.max_subscriptions = 0  # support can stop a tenant adding any
    alice.save()
    api.delete(f"{URL}/{Subscription.objects.first().id}")
    assert create(api).status_code == 409
