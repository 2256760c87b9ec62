"""Django's template asgi.py, unchanged: under ``takealook-run uvicorn orders_site.asgi:application``
the agent traces it without a line here."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_site.settings")

application = get_asgi_application()
