"""Specific routes first; the catch-all last, as a Wagtail project's urls.py has it."""

from django.urls import path, re_path

from cms import views

urlpatterns = [
    re_path(r"^api/articles$", views.article_list),  # DRF's router writes its routes as regexes
    re_path(r"^api/articles/(?P<slug>[^/.]+)$", views.article_detail),
    path("login/", views.login),
    path("account/", views.account),
    re_path(r"^((?:[\w\-]+/)*)$", views.serve_page),  # Wagtail's page route (wagtail/urls.py)
]
