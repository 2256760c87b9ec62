import json

from django.core.paginator import Paginator
from django.db import connection
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts.models import Account


@ensure_csrf_cookie
def csrf(request):
    return JsonResponse({})


def accounts(request):
    if request.method == "POST":  # CSRF-checked; a taken email is an IntegrityError Django turns into a 500
        data = json.loads(request.body)
        account = Account.objects.create(username=data["username"], email=data["email"], name=data["name"])
        return JsonResponse({"id": account.pk}, status=201)
    found = Account.objects.filter(name__icontains=request.GET.get("search", "")).order_by("id")
    page = Paginator(found, int(request.GET.get("per_page", 10))).get_page(request.GET.get("page", 1))
    return JsonResponse({"results": [a.username for a in page], "pages": page.paginator.num_pages})


def account(request, username):
    found = Account.objects.filter(username=username, email=request.GET.get("email", "")).first()
    if found is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse({"id": found.pk})


def by_reference(request, ref):
    with connection.cursor() as cursor:  # the server casts: a typed reference fails there
        cursor.execute("SELECT id FROM accounts WHERE id = %s::int", [ref])
        row = cursor.fetchone()
    return JsonResponse({"id": row[0] if row else None})


def by_number(request, ref):
    return JsonResponse({"id": Account.objects.filter(pk=ref).first().pk})  # Django's own ValueError first


urlpatterns = [
    path("api/csrf/", csrf),
    path("api/accounts/", accounts),
    path("api/accounts/<str:username>/", account),
    path("api/accounts/by-ref/<str:ref>/", by_reference),
    path("api/accounts/by-number/<str:ref>/", by_number),
]
