"""The seeded orders service (Django): loads each order's product one query at a time (an N+1)."""

import os
import sys

import takealook.agent

takealook.agent.start()

import psycopg.conninfo  # noqa: E402
from django.conf import settings  # noqa: E402

_params = psycopg.conninfo.conninfo_to_dict(os.environ["ORDERS_DSN"])
settings.configure(
    DEBUG=False, SECRET_KEY="tests-only", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"],
    MIDDLEWARE=[], INSTALLED_APPS=[], USE_TZ=True,
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _params["dbname"],
                           "USER": _params.get("user", "postgres"), "HOST": _params.get("host", "127.0.0.1"),
                           "PORT": _params.get("port", "5432")}},
)

from django.db import connection  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def orders(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, product_id FROM orders WHERE user_id = %s ORDER BY id", [request.GET["user"]])
        rows = cursor.fetchall()
        names = []
        for _, product_id in rows:  # the N+1: one query per order, ~8 ms each
            cursor.execute("SELECT name, pg_sleep(0.008)::text FROM products WHERE id = %s", [product_id])
            names.append(cursor.fetchone()[0])
    return JsonResponse({"orders": [row[0] for row in rows], "products": names})


urlpatterns = [path("api/orders/", orders)]

if __name__ == "__main__":
    from django.core.wsgi import get_wsgi_application
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(sys.argv[1]), get_wsgi_application(), threaded=True)
    print("listening", flush=True)
    server.serve_forever()
