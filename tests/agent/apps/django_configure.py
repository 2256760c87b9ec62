"""A one-file Django app that calls settings.configure() itself (no DJANGO_SETTINGS_MODULE)."""

import os
import sys

from django.conf import settings

settings.configure(
    DEBUG=False, SECRET_KEY="tests-only", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"],
    MIDDLEWARE=[], INSTALLED_APPS=[],
)

from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request, name):
    return JsonResponse({"hello": name})


urlpatterns = [path("hello/<str:name>/", hello)]

if __name__ == "__main__":
    from django.core.wsgi import get_wsgi_application
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", int(sys.argv[1]), get_wsgi_application(), handler_class=Quiet)
    print("listening", os.getpid(), flush=True)
    server.serve_forever()
