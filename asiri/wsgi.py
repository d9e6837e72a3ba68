import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asiri.settings")
application = get_wsgi_application()

# Only the web needs it: without it a production web process answered its probes (which need no Host) and a 400
# to every other request, so a deploy looked healthy while it served nothing. runserver refuses the same way.
if not settings.DEBUG and not settings.ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS must name the host names this service is reached by (comma-separated) when "
        "DJANGO_DEBUG is off: without it every request but the health probes is refused with a 400."
    )
