"""Settings from the environment: CMS_DSN, and CMS_CLEAN=1 for the same site with its problems fixed."""

import os

import psycopg.conninfo

CLEAN = os.environ.get("CMS_CLEAN") == "1"
_params = psycopg.conninfo.conninfo_to_dict(os.environ["CMS_DSN"])

DEBUG = False
SECRET_KEY = "tests-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "cms.urls"
INSTALLED_APPS = ["cms"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"  # sessions without a table
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params["dbname"],
        "USER": _params.get("user", "postgres"),
        "HOST": _params.get("host", "127.0.0.1"),
        "PORT": _params.get("port", "5432"),
        # Django's default, 0, connects in every request: the seeded connection churn. Fixed: kept 60 s.
        "CONN_MAX_AGE": 60 if CLEAN else 0,
        "CONN_HEALTH_CHECKS": CLEAN,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
