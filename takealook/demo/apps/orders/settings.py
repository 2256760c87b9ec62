"""Settings of the demo's orders service (Django on PostgreSQL)."""

import os

import psycopg.conninfo

_db = psycopg.conninfo.conninfo_to_dict(os.environ["DEMO_ORDERS_DSN"])
SECRET_KEY = "takealook-demo-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "takealook.demo.apps.orders.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
USE_TZ = True
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": _db["dbname"], "USER": _db.get("user", "postgres"),
    "HOST": _db.get("host", "127.0.0.1"), "PORT": _db.get("port", "5432"), "CONN_MAX_AGE": 600,
}}
