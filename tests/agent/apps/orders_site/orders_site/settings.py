"""Settings of the orders app (B) of the agent's tests: PostgreSQL through Django's backend."""

import os
import sys

import psycopg.conninfo

if os.environ.get("ORDERS_FORCE_PSYCOPG2"):
    sys.modules["psycopg"] = None  # Django then uses psycopg2 (and its own cursor_factory)

_params = psycopg.conninfo.conninfo_to_dict(os.environ["ORDERS_DSN"])
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "orders_site.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params["dbname"],
        "USER": _params.get("user", "postgres"),
        "HOST": _params.get("host", "127.0.0.1"),
        "PORT": _params.get("port", "5432"),
    }
}
