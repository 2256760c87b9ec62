"""The demo's orders service (Django).

Built-in problem: the orders listing reads each order's lines with one query
per order (an N+1): a customer with 250 orders costs 251 round trips.
"""

import math
import time

from django.db import connection
from django.http import JsonResponse
from django.urls import path


def listing(request, customer_id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, placed_at, status FROM orders WHERE customer_id = %s ORDER BY placed_at DESC",
                       [customer_id])
        orders = cursor.fetchall()
        result = []
        for order_id, placed_at, status in orders:
            cursor.execute("SELECT product_sku, qty, price FROM order_lines WHERE order_id = %s", [order_id])
            lines = cursor.fetchall()
            result.append({"id": order_id, "placed_at": placed_at.isoformat(), "status": status,
                           "total": float(sum(qty * price for _, qty, price in lines)), "lines": len(lines)})
    return JsonResponse(result, safe=False)


PROFILE_LATENCY_S = 0.02


def summary(request, customer_id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT o.placed_at, l.qty, l.price FROM orders o JOIN order_lines l ON l.order_id = o.id "
                       "WHERE o.customer_id = %s", [customer_id])
        lines = cursor.fetchall()
    # The loyalty score is the service's own work (milliseconds of CPU), and the
    # customer's profile comes from a service the demo does not run, in about
    # 20 ms (a sleep: as long on a fast machine as on a slow one).
    time.sleep(PROFILE_LATENCY_S)
    months = {}
    for placed_at, qty, price in lines:
        months[placed_at.strftime("%Y-%m")] = months.get(placed_at.strftime("%Y-%m"), 0) + float(qty * price)
    loyalty = sum(math.sqrt(i * len(lines) % 997) for i in range(150000)) / 150000
    return JsonResponse({"orders": len(lines), "spent": sum(months.values()), "months": len(months),
                         "loyalty": round(loyalty, 3)})


def health(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/customers/<int:customer_id>/orders/", listing),
    path("api/customers/<int:customer_id>/summary/", summary),
    path("health", health),
]
