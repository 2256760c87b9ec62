"""The shop of the load tests: a Django site with django.contrib.auth's login (sessions, CSRF) and a
hand-made token API, on PostgreSQL (SHOP_DSN)."""

import os
from pathlib import Path

import psycopg.conninfo

BASE_DIR = Path(__file__).resolve().parent.parent
_params = psycopg.conninfo.conninfo_to_dict(os.environ["SHOP_DSN"])
SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop_site.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth"]},
}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params["dbname"],
        "USER": _params.get("user", "postgres"),
        "HOST": _params.get("host", "127.0.0.1"),
        "PORT": _params.get("port", "5432"),
    }
}
# Tests only: a fast hasher, so that each simulated user's login costs milliseconds, not PBKDF2's 0.3 s.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/orders/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
