"""Real apps for the logged-in load tests: a Django shop (web pages and its token API, two gunicorns), a Flask
blog, each under ``takealook-run``, exporting to ``takealook collect``, on a private PostgreSQL.

``start_world(pg, tmp, processes)`` seeds the databases, starts everything, sends the real traffic (a user
who logs in through the forms, with their CSRF tokens, and uses the token API) with plain ``requests``, and
waits until its traces are in the store.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

from takealook.collector import open_store
from takealook.pgcluster import free_port
from tests.conftest import script, wait_for

APPS = Path(__file__).resolve().parent / "apps"
SHOP = APPS / "shop_site"
USER, PASSWORD = "alice", "wonderland-7"
EMAIL = "alice@example.com"
CREDENTIALS = {"SHOP_USER": USER, "SHOP_PASSWORD": PASSWORD, "BLOG_EMAIL": EMAIL, "BLOG_PASSWORD": PASSWORD}

SEED_SHOP = f"""
from django.contrib.auth.models import User
from shop.models import Order
alice = User.objects.create_user({USER!r}, password={PASSWORD!r})
others = [User.objects.create_user(f"user{{i}}", password="x") for i in range(9)]
Order.objects.bulk_create([Order(owner=(alice if i % 10 == 0 else others[i % 9]), number=f"N-{{i}}",
                                 total_cents=i) for i in range(20000)])
"""


@dataclass
class World:
    store: Path
    shop: str  # the web pages (service "shop")
    api: str  # the same Django project serving its API (service "shop-api")
    blog: str
    real_traces: int  # traces of the real traffic


def _seed(pg, processes_env: dict) -> dict:
    dsns = {"shop": pg.create_database("shop"), "blog": pg.create_database("blog")}
    env = {**processes_env, "SHOP_DSN": dsns["shop"]}
    for argv in (["migrate", "-v", "0"], ["shell", "-c", SEED_SHOP]):
        out = subprocess.run([sys.executable, "manage.py", *argv], cwd=SHOP, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    with psycopg.connect(dsns["blog"], autocommit=True) as conn:
        conn.execute("CREATE TABLE authors (id int PRIMARY KEY, email text UNIQUE, salt text, password_hash text)")
        conn.execute("INSERT INTO authors VALUES (1, %s, 's4lt', %s)",
                     (EMAIL, hashlib.sha256(("s4lt" + PASSWORD).encode()).hexdigest()))
        conn.execute("CREATE TABLE posts (id serial PRIMARY KEY, author_id int, title text)")
        conn.execute("INSERT INTO posts (author_id, title) "
                     "SELECT 1 + i % 3, 'post ' || i FROM generate_series(1, 300) i")
    return dsns


def start_world(pg, tmp: Path, processes) -> World:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
    dsns = _seed(pg, env)
    store = tmp / "spans.db"
    otlp, shop, api, blog = free_port(), free_port(), free_port(), free_port()
    processes.start([script("takealook"), "collect", "--listen", f"127.0.0.1:{otlp}", "--grpc", "off",
                     "--store", str(store), "--quiet"], port=otlp, env={})
    common = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}"}
    for service, port in (("shop", shop), ("shop-api", api)):
        processes.start([script("takealook-run"), "--service", service, script("gunicorn"), "-w", "2",
                         "-b", f"127.0.0.1:{port}", "shop_site.wsgi"], port=port, cwd=SHOP,
                        env={**common, "SHOP_DSN": dsns["shop"]})
    processes.start([script("takealook-run"), "--service", "blog", script("gunicorn"), "-w", "2",
                     "-b", f"127.0.0.1:{blog}", "blog:app"], port=blog, cwd=APPS,
                    env={**common, "BLOG_DSN": dsns["blog"]})
    world = World(store, f"http://127.0.0.1:{shop}", f"http://127.0.0.1:{api}", f"http://127.0.0.1:{blog}", 0)
    world.real_traces = _real_traffic(world)
    wait_for(lambda: _stored(store) >= world.real_traces, 45,
             message=f"{world.real_traces} traces of real traffic in the store\n{processes.logs()}")
    return world


def _real_traffic(world: World) -> int:
    """What a real user did, with plain requests (no trace context sent): returns the requests made."""
    sent = 0
    with requests.Session() as web:
        for _ in range(3):
            assert web.get(world.shop + "/", timeout=30).status_code == 200
        page = web.get(world.shop + "/accounts/login/", timeout=30)
        token = web.cookies["csrftoken"]
        answer = web.post(world.shop + "/accounts/login/", data={"csrfmiddlewaretoken": token, "username": USER,
                                                                 "password": PASSWORD, "next": ""}, timeout=30)
        assert page.status_code == 200 and answer.url.endswith("/orders/"), answer.text[:300]
        sent += 3 + 1 + 2  # the POST and the page it redirects to
        for page_number in [1] * 8 + [2] * 2:
            assert web.get(f"{world.shop}/orders/?page={page_number}", timeout=30).status_code == 200
            sent += 1
        for _ in range(2):
            created = web.post(world.shop + "/orders/new/", headers={"X-CSRFToken": web.cookies["csrftoken"]},
                               timeout=30)
            assert created.status_code == 200  # redirected to /orders/
            sent += 2
    with requests.Session() as api:
        answer = api.post(world.api + "/api/token/", json={"username": USER, "password": PASSWORD}, timeout=30)
        key = answer.json()["token"]
        sent += 1
        for _ in range(6):
            assert api.get(world.api + "/api/orders/?limit=10", headers={"Authorization": f"Token {key}"},
                           timeout=30).status_code == 200
            sent += 1
    with requests.Session() as blog:
        for path in ["/"] * 2 + ["/posts/1"] * 5:
            assert blog.get(world.blog + path, timeout=30).status_code == 200
            sent += 1
        form = blog.get(world.blog + "/login", timeout=30).text
        token = form.split('name="csrf_token" value="')[1].split('"')[0]
        answer = blog.post(world.blog + "/login?next=", data={"csrf_token": token, "email": EMAIL,
                                                              "password": PASSWORD}, timeout=30)
        assert answer.url.endswith("/dashboard"), answer.text[:300]
        sent += 3
        for _ in range(6):
            assert blog.get(world.blog + "/dashboard", timeout=30).status_code == 200
            sent += 1
    return sent


def _stored(store: Path, load=False) -> int:
    if not store.exists():
        return 0
    try:
        with open_store(store, allow_empty=True) as reader:
            return reader.count_traces(load=load)
    except Exception:  # noqa: BLE001 - the collector may be creating the file right now
        return 0
