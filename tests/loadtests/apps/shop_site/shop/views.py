import json
import secrets

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Sum
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from shop.models import ApiToken, Order

PAGE = 20


def home(request):
    return HttpResponse("<!doctype html><title>Shop</title><h1>Welcome to the shop</h1>")


@login_required
def orders(request):
    """The logged-in page: the user's orders, a page at a time, with their totals (no index on owner: a scan)."""
    page = max(1, int(request.GET.get("page", "1")))
    mine = Order.objects.filter(owner=request.user)
    summary = mine.aggregate(count=Count("id"), total=Sum("total_cents"))
    rows = mine.order_by("-created", "-id")[(page - 1) * PAGE:page * PAGE]
    return render(request, "shop/orders.html", {"orders": rows, "summary": summary, "page": page})


@login_required
@require_POST
def new_order(request):
    Order.objects.create(owner=request.user, number=f"N-{secrets.randbelow(10**6)}", total_cents=100)
    return redirect("orders")


@csrf_exempt
@require_POST
def token(request):
    """POST {"username", "password"} -> {"token": ..., "user": {...}} (what DRF's obtain_auth_token answers)."""
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"detail": "JSON parse error."}, status=400)
    user = authenticate(request, username=data.get("username"), password=data.get("password"))
    if user is None:
        return JsonResponse({"non_field_errors": ["Unable to log in with provided credentials."]}, status=400)
    api_token, _ = ApiToken.objects.get_or_create(user=user, defaults={"key": secrets.token_hex(20)})
    return JsonResponse({"token": api_token.key, "user": {"id": user.id, "username": user.username}})


def api_orders(request):
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    api_token = ApiToken.objects.select_related("user").filter(key=key).first() if scheme == "Token" and key else None
    if api_token is None:
        response = JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
        response["WWW-Authenticate"] = "Token"
        return response
    limit = min(100, int(request.GET.get("limit", "10")))
    rows = Order.objects.filter(owner=api_token.user).order_by("-created", "-id").values("number", "total_cents")
    return JsonResponse({"orders": list(rows[:limit])})
