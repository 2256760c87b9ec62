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


async def order_async(request, pk):
    """The same order as an async view: async psycopg 3 and httpx.AsyncClient, concurrently."""
    import asyncio

    import psycopg

    async with await psycopg.AsyncConnection.connect(os.environ["ORDERS_DSN"], autocommit=True) as conn:
        cursor = await conn.execute("SELECT sku, qty FROM order_lines WHERE order_id = %s ORDER BY sku", [pk])
        lines = await cursor.fetchall()
    async with httpx.AsyncClient(timeout=10) as client:
        answers = await asyncio.gather(*(client.get(f"{INVENTORY_URL}/stock/{sku}") for sku, _ in lines[:2]))
    stock = {sku: answer.json()["qty"] for (sku, _), answer in zip(lines, answers)}
    return JsonResponse({"order": pk, "lines": [list(line) for line in lines], "stock": stock})


def fail(request):
    raise RuntimeError("orders exploded")


urlpatterns = [
    path("api/orders/<int:pk>/", order),
    path("api/orders/<int:pk>/async/", order_async),
    path("api/fail/", fail),
]
