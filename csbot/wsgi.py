from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
django_application = get_wsgi_application()

from csbot.security import chunked_bodies, require_shared_cache  # noqa: E402 - needs settings

# A web server with DEBUG off refuses to start on a per-process cache (csbot.security).
require_shared_cache()
application = chunked_bodies(django_application)
