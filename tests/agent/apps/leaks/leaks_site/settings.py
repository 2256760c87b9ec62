"""The Django accounts app of the leak tests: the ORM on psycopg 3, CSRF, pagination."""

import os

import psycopg.conninfo

_params = psycopg.conninfo.conninfo_to_dict(os.environ["LEAKS_DJANGO_DSN"])
SECRET_KEY = "leak-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "leaks_site.urls"
INSTALLED_APPS = ["accounts"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params["dbname"],
        "USER": _params.get("user", "postgres"),
        "HOST": _params.get("host", "127.0.0.1"),
        "PORT": _params.get("port", "5432"),
    }
}
