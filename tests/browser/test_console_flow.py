"""Support on a laptop, in a real browser: sees two endpoints down on the dashboard, follows the link to their
deliveries, and once one is fixed redelivers its retrying delivery now and watches it succeed."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from deliveries.services import event_publish
from tests.browser.conftest import ARTIFACTS
from tests.support.processes import celery_worker
from tests.support.receiver import Receiver, respond
from webhooks.models import Subscription

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The first retry ten minutes away: the down endpoints' deliveries stay `retrying` for the whole test.
WORKER_ENV = {"ASIRI_ALLOW_PRIVATE_URLS": "1", "ASIRI_REQUIRE_HTTPS": "0", "ASIRI_RETRY_SCHEDULE": "600"}
LAPTOP = {"width": 1400, "height": 900}
# The list table against the box it sits in, and the page against the window: no horizontal scrolling.
WIDTHS = """() => {
    const table = document.querySelector('#result_list');
    const box = document.querySelector('#changelist-form') || table.parentElement;
    return {table: table.getBoundingClientRect().width, box: box.getBoundingClientRect().width,
            page: document.documentElement.scrollWidth, window: window.innerWidth};
}"""


@pytest.fixture
def http_cookies(settings):
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def assert_fits(page, name: str) -> None:
    widths = page.evaluate(WIDTHS)
    assert widths["table"] <= widths["box"] + 1, (name, widths)
    assert widths["page"] <= widths["window"], (name, widths)


def test_support_sees_what_is_down_and_redelivers_now_once_fixed(
    browser, live_server, http_cookies, support_user, alice, make_subscription, empty_broker
):
    with Receiver() as receiver, celery_worker(**WORKER_ENV):
        down_a = make_subscription(alice, url=receiver.on("/down-a", respond(500, body=b"db is down")))
        down_b = make_subscription(alice, url=receiver.on("/down-b", respond(500, body=b"db is down")))
        fine = make_subscription(alice, url=receiver.url("/fine"))
        event_publish(tenant=alice, event_type="invoice.paid", data={"invoice": "in_7"})
        wait_until(lambda: Delivery.objects.filter(status__in=["retrying", "succeeded"]).count() == 3)
        assert Delivery.objects.get(subscription=fine).status == DeliveryStatus.SUCCEEDED
        retrying = Delivery.objects.get(subscription=down_a)
        assert retrying.status == DeliveryStatus.RETRYING and retrying.next_attempt_at > timezone.now()

        page = browser.new_page(viewport=LAPTOP)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "sam")
        page.fill("#id_password", "support-pass-123")
        page.click("input[type=submit]")
        page.wait_for_selector("#dashboard-link")

        page.goto(f"{live_server.url}/admin/dashboard/")
        rows = page.locator("#failing-now tbody tr")
        assert rows.count() == 2
        text = page.inner_text("#failing-now")
        assert down_a.id in text and down_b.id in text and fine.id not in text and "HTTP 500" in text
        for sub in (down_a, down_b):
            since = Subscription.objects.get(pk=sub.pk).failing_since
            row = page.locator("#failing-now tr", has_text=sub.id)
            assert row.locator(".failing-since").inner_text() == since.strftime("%Y-%m-%d %H:%M:%S UTC")
        page.screenshot(path=ARTIFACTS / "console-1-dashboard.png", full_page=True)

        page.locator("#failing-now tr", has_text=down_a.id).locator("a.waiting").click()
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 1
        assert page.locator(f"#result_list [title='{retrying.id}']").count() == 1
        assert_fits(page, "deliveries")
        page.screenshot(path=ARTIFACTS / "console-2-deliveries.png", full_page=True)

        receiver.behaviours["/down-a"] = respond(200)  # the tenant fixed the endpoint
        page.click(f"a:has([title='{retrying.id}'])")
        page.wait_for_selector("#redeliver-button")
        assert "instead of at" in page.inner_text("#redeliver-plan")
        page.click("#redeliver-button")
        page.wait_for_selector(f"text=Redelivering 1 delivery: {retrying.id}.")
        wait_until(lambda: Delivery.objects.get(pk=retrying.pk).status == DeliveryStatus.SUCCEEDED)
        page.reload()
        page.wait_for_selector("text=Succeeded")
        codes = page.locator("#attempts-group td.field-response_status_code").all_inner_texts()
        assert [c.strip() for c in codes] == ["500", "200"]  # the failure, then the attempt made at once
        page.screenshot(path=ARTIFACTS / "console-3-delivery.png", full_page=True)
        assert len([r for r in receiver.requests if r.path == "/down-a"]) == 2

        page.goto(f"{live_server.url}/admin/webhooks/subscription/")
        page.wait_for_selector("#result_list")
        assert_fits(page, "subscriptions")
        page.screenshot(path=ARTIFACTS / "console-4-subscriptions.png", full_page=True)
        page.goto(f"{live_server.url}/admin/deliveries/delivery/")
        assert_fits(page, "all deliveries")
    # The scheduled retry was replaced, not added: nothing more reached the fixed endpoint.
    assert len([r for r in receiver.requests if r.path == "/down-a"]) == 2
