"""WSGI entry point: `gunicorn service.wsgi:app`."""

import os

from service.app import create_app

# Production workers cache keys; revocation still takes effect at once (service/http/keycache.py).
app = create_app({"NEXTBEST_KEY_CACHE": os.environ.get("NEXTBEST_KEY_CACHE", "on")})
