import os

import httpx
from django.db import connection
from django.http import JsonResponse
from django.urls import path

INVENTORY_URL = os.environ.get("INVENTORY_URL", "")


def order(request, pk):
    with connection.cursor() as cursor:
        cursor.execute("SELECT sku, qty FROM order_lines WHERE order_id = %s ORDER BY sku", [pk])
        lines = cursor.fetchall()
    stock = {}
    with httpx.Client(timeout=10) as client:
        for sku, _ in lines[:2]:
            stock[sku] = client.get(f"{INVENTORY_URL}/stock/{sku}").json()["qty"]
    return JsonResponse({"order": pk, "lines": [list(line) for line in lines], "stock": stock,
                         "driver": connection.Database.__name__})


def fail(request):
    raise RuntimeError("orders exploded")


urlpatterns = [
    path("api/orders/<int:pk>/", order),
    path("api/fail/", fail),
]
