"""Django's template wsgi.py with the agent's two lines on top."""
import os

import takealook.agent

takealook.agent.start()

from django.core.wsgi import get_wsgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_site.settings")

application = get_wsgi_application()
