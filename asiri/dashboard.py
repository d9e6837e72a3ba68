from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from deliveries.dashboard import dashboard_stats

CHART_WIDTH, CHART_HEIGHT = 720, 160


def _bars(buckets, label_format: str) -> list[dict]:
    """Bars for an inline SVG chart: height is the success rate, grey where no attempt was made."""
    width = CHART_WIDTH / len(buckets)
    bars = []
    for n, bucket in enumerate(buckets):
        rate = bucket.rate
        height = (rate or 0) * (CHART_HEIGHT - 20)
        bars.append(
            {
                "x": round(n * width + 2, 1),
                "width": round(width - 4, 1),
                "y": round(CHART_HEIGHT - 20 - height, 1),
                "height": round(height, 1),
                "colour": "#cfd8dc"
                if rate is None
                else ("#2e7d32" if rate >= 0.95 else "#ef6c00" if rate >= 0.5 else "#c62828"),
                "label": bucket.start.strftime(label_format),
                "title": (
                    f"{bucket.start:%Y-%m-%d %H:%M} UTC: "
                    + (f"{rate:.0%} of {bucket.total} attempts answered 2xx" if rate is not None else "no attempt")
                ),
                "text_x": round(n * width + width / 2, 1),
            }
        )
    return bars


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("deliveries.view_delivery"):
        raise PermissionDenied
    stats = dashboard_stats()
    return TemplateResponse(
        request,
        "admin/dashboard.html",
        {
            **admin.site.each_context(request),
            "title": "Deliveries dashboard",
            "stats": stats,
            "hourly_bars": _bars(stats["hourly"], "%H"),
            "daily_bars": _bars(stats["daily"], "%a"),
            "chart_width": CHART_WIDTH,
            "chart_height": CHART_HEIGHT,
        },
    )
