import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Apps' posts with an active key are served in front of Django (ingest/fastpath.py).
from ingest.fastpath import wsgi as serve_app_posts_first  # noqa: E402 - needs the apps loaded

application = serve_app_posts_first(application)
