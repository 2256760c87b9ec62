"""Overlapping indexes that Django made for foreign keys: one finding per table, advising the migration change.

The schema is made by Django's own schema editor (what ``migrate`` runs), in a
subprocess so that configuring Django does not leak into other tests.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg.conninfo

from takealook.analyzers.db.connection import connect
from takealook.analyzers.db.index_health import index_health
from takealook.analyzers.db.options import Thresholds
from tests.analyzers.db.conftest import execute

MODELS = textwrap.dedent('''
    import sys
    import django
    from django.conf import settings

    params = dict(arg.split("=", 1) for arg in sys.argv[1:])
    settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": params["dbname"],
                                              "HOST": params.get("host", ""), "PORT": params.get("port", ""),
                                              "USER": params.get("user", ""), "PASSWORD": params.get("password", "")}},
                       INSTALLED_APPS=[], USE_TZ=True)
    django.setup()
    from django.db import connection, models

    class Customer(models.Model):
        name = models.CharField(max_length=50)
        class Meta:
            app_label = "shop"

    class Warehouse(models.Model):
        class Meta:
            app_label = "shop"

    class Order(models.Model):
        customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
        warehouse = models.ForeignKey(Warehouse, on_delete=models.CASCADE)
        placed_at = models.DateTimeField()
        class Meta:
            app_label = "shop"
            indexes = [models.Index(fields=["customer", "placed_at"], name="order_customer_placed"),
                       models.Index(fields=["warehouse", "placed_at"], name="order_warehouse_placed")]

    class Line(models.Model):
        order = models.ForeignKey(Order, on_delete=models.CASCADE)
        class Meta:
            app_label = "shop"

    with connection.schema_editor() as editor:
        for model in (Customer, Warehouse, Order, Line):
            editor.create_model(model)
''')


def test_django_foreign_key_overlaps_are_one_migration_advice_per_table(pg_db):
    params = psycopg.conninfo.conninfo_to_dict(pg_db)
    out = subprocess.run([sys.executable, "-c", MODELS, *(f"{k}={v}" for k, v in params.items())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # A hand-made index of the same shape is not Django's: it gets the plain DROP advice.
    execute(pg_db, "CREATE TABLE notes (id int PRIMARY KEY, order_id int REFERENCES shop_order (id), body text); "
                   "CREATE INDEX notes_order ON notes (order_id); CREATE INDEX notes_order_body ON notes (order_id, body)")
    with connect(pg_db) as session:
        names = {row["indexname"] for row in session.query("SELECT indexname FROM pg_indexes WHERE tablename = %s",
                                                           ("shop_order",))}
        findings = index_health(session, Thresholds(min_stats_age_s=0))
    django = [f for f in findings if f.kind == "overlapping_django_index"]
    (order,) = django
    assert order.subject == "public.shop_order" and sorted(order.data["fields"]) == ["customer", "warehouse"]
    assert set(order.data["indexes"]) == {f"public.{n}" for n in names if n.startswith(("shop_order_customer_id_",
                                                                                       "shop_order_warehouse_id_"))}
    assert sorted(order.data["covered_by"]) == ["public.order_customer_placed", "public.order_warehouse_placed"]
    assert "db_index=False" in order.fix and "makemigrations" in order.fix and "DROP INDEX" not in order.fix
    plain = [(f.subject, f.fix) for f in findings if f.kind == "overlapping_index"]
    assert plain == [("public.notes_order", "DROP INDEX CONCURRENTLY public.notes_order;")]
    # The line's order_id index is Django's too, but nothing covers it: no finding names it.
    assert not any("shop_line" in (f.subject or "") and "overlapping" in f.kind for f in findings)
