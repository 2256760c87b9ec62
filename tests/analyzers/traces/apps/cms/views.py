"""Pages by path under one catch-all route (as Wagtail serves them), a token-protected API, a login."""

import hashlib
import hmac

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import get_token

from cms.models import Account, ApiToken, Article, Location, Page, Post

PAGE_SIZE = 12


def serve_page(request, path):
    """Every page of the site, looked up by its path: Wagtail's ``serve`` in miniature."""
    try:
        page = Page.objects.get(path="/" + path)
    except Page.DoesNotExist:
        raise Http404("no such page") from None
    body = {"title": page.title}
    if page.kind == "blog":
        posts = Post.objects.order_by("-id")
        if settings.CLEAN:
            posts = posts.select_related("author")
        # Not fixed: each post's author is one more query (the seeded N+1 of the blog index).
        body["posts"] = [{"title": p.title, "author": p.author.name} for p in posts[:PAGE_SIZE]]
    elif page.kind == "locations":
        body["cities"] = list(Location.objects.values_list("city", flat=True))
    elif page.kind == "home":
        body["latest"] = list(Post.objects.order_by("-id").values_list("title", flat=True)[:3])
    return JsonResponse(body)


def _account(request):
    """The account of an ``Authorization: Token ...`` header, or None."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Token" or not key:
        return None
    token = ApiToken.objects.select_related("account").filter(key=key).first()
    return token.account if token else None


def _unauthorized():
    return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)


def article_list(request):
    if _account(request) is None:
        return _unauthorized()
    page = max(1, int(request.GET.get("page", "1")))
    rows = Article.objects.order_by("slug").values("slug", "title")[(page - 1) * 5:page * 5]
    return JsonResponse({"results": list(rows), "page": page})


def article_detail(request, slug):
    if _account(request) is None:
        return _unauthorized()
    article = Article.objects.filter(slug=slug).values("slug", "title").first()
    if article is None:
        raise Http404("no such article")
    return JsonResponse(article)


def login(request):
    if request.method == "POST":
        account = Account.objects.filter(username=request.POST.get("username", "")).first()
        given = hashlib.sha256(request.POST.get("password", "").encode()).hexdigest()
        if account is not None and hmac.compare_digest(given, account.password_sha256):
            request.session["account"] = account.id
            return HttpResponseRedirect("/account/")
        return HttpResponse("wrong username or password", status=403)
    token = get_token(request)
    return HttpResponse(f'<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
                        '<input name="username"><input name="password" type="password"></form>')


def account(request):
    account_id = request.session.get("account")
    if account_id is None:
        return HttpResponseRedirect("/login/?next=/account/")
    account = Account.objects.get(id=account_id)
    return JsonResponse({"username": account.username})
