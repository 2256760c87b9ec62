"""One route normalizer for traces, load tests and the report: routes of every framework in one style,
catch-all routes told apart, values in paths templated."""

from __future__ import annotations

import pytest

from takealook.routes import ANY_PATH, RouteName, Template, endpoint_name, endpoint_route, route_template, template_path


@pytest.mark.parametrize("route, template", [
    ("/orders/<int:id>", "/orders/{id}"),  # Flask / Werkzeug
    ("/products/<sku>", "/products/{sku}"),
    ("/shop/<string(length=2):country>/", "/shop/{country}/"),
    ("orders/<int:pk>/", "/orders/{pk}/"),  # Django path()
    (r"^orders/(?P<pk>\d+)/$", "/orders/{pk}/"),  # Django re_path()
    ("/api/articles/(?P<slug>[^/.]+)$", "/api/articles/{slug}"),  # DRF's router, as the agent records it
    ("/api/articles$", "/api/articles"),
    (r"^api/articles\.(?P<format>[a-z0-9]+)/?$", "/api/articles.{format}/"),
    (r"^archive/(?P<year>[0-9]{4})/(?P<month>[0-9]{2})/$", "/archive/{year}/{month}/"),
    (r"^page/(\d+)/$", "/page/{id}/"),  # an unnamed group
    (r"^x/(?:(?P<page>\d+)/)?$", "/x/{page}/"),
    (r"^robots.txt$", "/robots.txt"),
    ("/users/{user_id}", "/users/{user_id}"),  # Starlette, OpenAPI
    ("/users/{user_id:int}", "/users/{user_id}"),
])
def test_routes_of_every_framework_in_one_style(route, template):
    assert route_template(route) == Template(template, False)
    assert endpoint_route(route, "/whatever/7").route == template  # the path does not matter


@pytest.mark.parametrize("route, template", [
    (r"/((?:[\w\-]+/)*)$", "/{path}"),  # Wagtail's page route, as the Django agent records it
    (r"^((?:[\w\-]+/)*)$", "/{path}"),
    ("/files/<path:rest>", "/files/{rest}"),
    ("/static/{name:path}", "/static/{name}"),
    (r"^(?P<url>.*)$", "/{url}"),
    (r"^media/(.+)$", "/media/{path}"),
])
def test_catch_all_routes_are_recognised(route, template):
    assert route_template(route) == Template(template, True)


def test_a_catch_all_names_the_endpoint_by_the_requests_own_path():
    wagtail = r"/((?:[\w\-]+/)*)$"
    assert endpoint_route(wagtail, "/blog/") == RouteName("/blog/", "/{path}", True)
    assert endpoint_route(wagtail, "/locations/") == RouteName("/locations/", "/{path}", True)
    assert endpoint_route(wagtail, "/blog/2024/05/17/") == RouteName("/blog/{id}/{id}/{id}/", "/{path}", True)
    assert endpoint_route(None, "/orders/17/items") == RouteName("/orders/{id}/items", ANY_PATH, True)  # no route
    assert endpoint_route(None, None).route == "/"


@pytest.mark.parametrize("path, templated", [
    ("/orders/17/items/3", "/orders/{id}/items/{id}"),
    ("/items/3f2a9c1e-1b2c-4d5e-8f90-1234567890ab", "/items/{uuid}"),
    ("/blobs/deadbeef42", "/blobs/{hex}"),
    ("/s/aZ3kQ9x7Lm2pQr8sT", "/s/{token}"),
    ("/about/team", "/about/team"),  # names stay
    ("/blog/2024-05-01-my-first-post/", "/blog/2024-05-01-my-first-post/"),  # a slug, not a value
    ("/v1/users", "/v1/users"),
    ("/img/logo2.png", "/img/logo2.png"),
    ("", "/"),
])
def test_values_in_paths_are_templated_and_names_kept(path, templated):
    assert template_path(path) == templated


def test_endpoint_names_are_what_load_runs_and_reports_use():
    assert endpoint_name("GET", "/orders/<int:id>") == "GET /orders/{id}"
    assert endpoint_name("GET", "/orders/{id}") == "GET /orders/{id}"  # already named: unchanged
    assert endpoint_name("POST", "/api/articles/(?P<slug>[^/.]+)$") == "POST /api/articles/{slug}"


def test_odd_routes_never_raise():
    for route in ("(", "[", "^(?P<x", "\\", "(?P<a>[)", "<int:>", "{", "}{", "^$", "|", "(?=x)"):
        assert route_template(route).text.startswith("/")
