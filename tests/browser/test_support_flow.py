"""A support person, in a real browser, finds why an event did not arrive and sends it again."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote

from tests.browser.conftest import ARTIFACTS
from tests.support.processes import celery_worker
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {"ASIRI_ALLOW_PRIVATE_URLS": "1", "ASIRI_REQUIRE_HTTPS": "0", "ASIRI_RETRY_SCHEDULE": "600"}


@pytest.fixture
def http_cookies(settings):
    # The live server speaks plain http on 127.0.0.1; production cookies are https-only.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


def test_support_finds_a_failed_delivery_and_redelivers_it(
    browser, live_server, http_cookies, support_user, alice, make_subscription, make_failed_delivery, empty_broker
):
    with Receiver() as receiver, celery_worker(**WORKER_ENV):
        subscription = make_subscription(alice, url=receiver.url("/alice"))
        delivery = make_failed_delivery(subscription, body="maintenance", data={"invoice": "in_42"})
        event = delivery.event

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "sam")
        page.fill("#id_password", "support-pass-123")
        page.click("input[type=submit]")
        page.wait_for_selector("#dashboard-link")

        page.goto(f"{live_server.url}/admin/deliveries/delivery/")
        page.fill("#searchbar", event.id)
        page.press("#searchbar", "Enter")
        page.wait_for_selector(f"[title='{delivery.id}']")  # the id, shortened, whole on hover
        page.screenshot(path=ARTIFACTS / "1-search.png", full_page=True)
        page.click(f"a:has([title='{delivery.id}'])")
        page.wait_for_selector("text=HTTP 503")
        assert "maintenance" in page.content()
        page.screenshot(path=ARTIFACTS / "2-detail.png", full_page=True)

        page.goto(f"{live_server.url}/admin/deliveries/delivery/?q={event.id}")
        page.check("input.action-select")
        page.select_option("select[name=action]", "redeliver")
        page.click("button[name=index]")
        page.wait_for_selector("text=Yes, redeliver")
        assert receiver.url("/alice") in page.content()
        page.screenshot(path=ARTIFACTS / "3-confirm.png", full_page=True)
        page.click("input[value='Yes, redeliver']")
        page.wait_for_selector(f"text=Redelivering 1 delivery: {delivery.id}.")

        receiver.wait_for(1, timeout=20)
        detail = f"{live_server.url}/admin/deliveries/delivery/{quote(delivery.id)}/change/"
        for _ in range(100):
            page.goto(detail)
            if "Succeeded" in page.content():
                break
            page.wait_for_timeout(200)
        page.screenshot(path=ARTIFACTS / "4-redelivered.png", full_page=True)
        text = page.content()
        assert "Succeeded" in text
        assert page.locator("#attempts-group tbody tr").count() >= 3  # the new attempt beside the two failures

        page.goto(f"{live_server.url}/admin/dashboard/")
        assert page.locator("#hourly-chart rect.bar").count() == 24
        assert page.locator("#daily-chart rect.bar").count() == 7
        page.screenshot(path=ARTIFACTS / "5-dashboard.png", full_page=True)
    assert receiver.requests[0].headers["webhook-id"] == delivery.id
