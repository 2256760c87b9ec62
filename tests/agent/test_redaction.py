"""What the agent keeps of URLs and exception messages: ids and names yes, personal values no.

Unit cases pin the rules (docs/agent.md, "What is recorded"); hypothesis plants
values in query strings, paths and messages and checks they never come out;
real PostgreSQL errors (psycopg and psycopg2) carry planted literals and emails
through the scrubber. ``test_leaks.py`` runs the same through real apps.
"""

from __future__ import annotations

import re
import string
import traceback

import psycopg
import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from takealook.agent import errorscrub
from takealook.agent.redact import REDACTED, Redactor
from takealook.agent.settings import AgentSettings
from takealook.agent.sqlscrub import scrub

# --------------------------------------------------------------------------- query strings


@pytest.mark.parametrize("query, expected", [
    ("page=2&per_page=50&sort=-created_at&order=name,asc", "page=2&per_page=50&sort=-created_at&order=name,asc"),
    ("q=alice&email=a%40b.org&name=Bob+Smith", "q=REDACTED&email=REDACTED&name=REDACTED"),
    ("customer_id=17&price=9.50&delta=-3", "customer_id=17&price=9.50&delta=-3"),
    ("token=123456&api_key=abc&code=999", "token=REDACTED&api_key=REDACTED&code=REDACTED"),
    ("phone=5551234567&zip=90210&card_number=4111111111111111&dob=19800101",
     "phone=REDACTED&zip=REDACTED&card_number=REDACTED&dob=REDACTED"),
    ("sort=a%40b.org&page=x y", "sort=REDACTED&page=REDACTED"),
    ("debug&flag=&q=", "debug&flag=&q="),
    ("alice%40example.org&x=1", "REDACTED&x=1"),
    ("per%5Fpage=20&Page=3", "per%5Fpage=20&Page=3"),
    ("", ""),
])
def test_query_keeps_numbers_and_paging_words_only(query, expected):
    assert Redactor().query(query) == expected


def test_query_modes_and_names():
    query = "q=alice&page=2&token=abc&status=paid"
    assert Redactor(query_mode="all").query(query) == "q=alice&page=2&token=REDACTED&status=paid"
    assert Redactor(query_mode="none").query(query) == "q=REDACTED&page=REDACTED&token=REDACTED&status=REDACTED"
    assert Redactor(query_names={"status", "Q"}).query(query) == "q=alice&page=2&token=REDACTED&status=paid"


FREE_TEXT = st.text(alphabet=string.ascii_letters + " @.-_+", min_size=1, max_size=20).filter(
    lambda v: any(c in v for c in " @"))


@given(st.lists(st.tuples(st.sampled_from(["q", "page", "sort", "email", "name", "x", "limit", "filter[s]"]),
                          FREE_TEXT), min_size=1, max_size=6))
@settings(max_examples=300)
def test_free_text_and_emails_never_come_out_of_a_query(pairs):
    from urllib.parse import urlencode

    out = Redactor().query(urlencode(pairs))
    assert all(item.endswith("=" + REDACTED) for item in out.split("&")), out


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("route, path, expected", [
    ("/users/<username>/profile", "/users/alice/profile", "/users/REDACTED/profile"),
    ("/orders/<int:order_id>", "/orders/7", "/orders/7"),
    ("/api/orders/<int:pk>/", "/api/orders/7/", "/api/orders/7/"),
    ("/items/<uuid:item>", "/items/3f2a9c1e-1b2c-4d5e-8f90-1234567890ab", "/items/3f2a9c1e-1b2c-4d5e-8f90-1234567890ab"),
    ("/objects/<oid>", "/objects/5f2b9c1e0a1b2c3d4e5f6a7b", "/objects/5f2b9c1e0a1b2c3d4e5f6a7b"),
    ("/objects/<oid>", "/objects/deadbeefcafe", "/objects/REDACTED"),  # hex letters only: a word, not an id
    ("/reset/<token>", "/reset/1234567890", "/reset/REDACTED"),  # a secret's name: even an id goes
    # Under a catch-all the path names a page: slugs stay, anything else goes.
    ("/files/<path:name>", "/files/alice/cv.pdf", "/files/alice/REDACTED"),
    ("/((?:[\\w\\-]+/)*)$", "/blog/2024-annual-review/", "/blog/2024-annual-review/"),  # Wagtail's
    ("/((?:[\\w\\-]+/)*)$", "/people/Alice.Smith/x7k2m9q/v2/", "/people/REDACTED/REDACTED/v2/"),
    ("/((?:[\\w\\-]+/)*)$", "/team/alice%40example.org/", "/team/REDACTED/"),
    ("/api/articles/(?P<slug>[^/.]+)$", "/api/articles/hello-world", "/api/articles/REDACTED"),  # not a catch-all
    ("/users/(?P<name>[^/]+)/$", "/users/alice/", "/users/REDACTED/"),
    ("/products/<sku>", "/products/SKU-000042", "/products/REDACTED"),
    ("/", "/", "/"),
])
def test_server_path_by_route(route, path, expected):
    assert Redactor().server_path(path, route) == expected


def test_each_result_is_the_same_worked_out_or_remembered_and_new_ids_are_not_kept():
    redactor = Redactor()
    route = "/users/<username>/orders/<int:order_id>"
    for i in range(3000):  # an id new at every request, as most apps see: worked out, never kept
        assert redactor.server_path(f"/users/alice/orders/{i}", route) == f"/users/REDACTED/orders/{i}"
        assert redactor.url(f"http://crm/api/orders/{i}?email=a@b.c") == f"http://crm/api/orders/{i}?email=REDACTED"
    assert len(redactor._done) == 0  # noqa: SLF001
    for _ in range(3):  # a path that comes back is kept the second time and read from then on
        assert redactor.server_path("/users/bob/orders/7", route) == "/users/REDACTED/orders/7"
    assert list(redactor._done.values()) == ["/users/REDACTED/orders/7"]  # noqa: SLF001


@pytest.mark.parametrize("url", [
    "http://crm/api/v2/contacts/alice/7", "HTTP://Host:80/a/b/", "http://h", "http://h/", "http://h/x",
    "https://u:p@h/users/bob/7", "http://h/users/alice?x=1", "http://h/a#frag", "http:///x", "//h/x/y",
    "http://h:8000/stock/0042", "http://h/users/alice/profile", "mailto:x", "http://h//", "http://h/é/7",
    "http://h/users/alice%40example.org", "http://h/api/orders/3f2a9c1e-1b2c-4d5e-8f90-1234567890ab"])
def test_an_outgoing_url_read_by_its_kept_head_is_the_url_worked_out_whole(url):
    redactor = Redactor()
    redactor.learn("/users/<username>/profile")
    whole = redactor._whole_url(url)  # noqa: SLF001
    assert [redactor.url(url) for _ in range(3)] == [whole] * 3
    assert "alice" not in whole and "bob" not in whole and ":p@" not in whole


def test_path_names_and_all():
    assert Redactor(path_names={"sku"}).server_path("/products/SKU-1", "/products/<sku>") == "/products/SKU-1"
    assert Redactor(path_mode="all").server_path("/users/alice", "/users/<name>") == "/users/alice"
    assert Redactor(path_mode="all").url("http://u:p@h/users/alice?q=x#f") == "http://h/users/alice?q=REDACTED"
    assert Redactor(path_mode="ids").server_path("/blog/2024-review/", "/((?:[\\w\\-]+/)*)$") == "/REDACTED/REDACTED/"


def test_outgoing_paths_keep_api_words_not_others():
    assert Redactor().url("http://crm/api/v2/contacts/alice/7") == "http://crm/api/v2/REDACTED/REDACTED/7"


def test_paths_without_a_route_keep_the_words_of_routes_served():
    redactor = Redactor()
    assert redactor.server_path("/users/alice", None) == "/REDACTED/REDACTED"
    redactor.learn("/users/<username>/profile")
    assert redactor.server_path("/users/alice", None) == "/users/REDACTED"
    assert redactor.url("http://svc:8000/api/users/alice/profile/3?page=2&q=bob") == \
        "http://svc:8000/api/users/REDACTED/profile/3?page=2&q=REDACTED"


@pytest.mark.parametrize("address, expected", [
    ("203.0.113.77", "203.0.113.0"),                  # a user's public address: its /24 only
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),  # IPv6: its /48
    ("::ffff:198.51.100.23", "198.51.100.0"),          # IPv4 mapped into IPv6
    ("8.8.4.4", "8.8.4.0"),
    ("127.0.0.1", "127.0.0.1"),                        # loopback, private, link-local, shared: a proxy or a router
    ("10.1.42.7", "10.1.42.7"),
    ("172.17.0.3", "172.17.0.3"),
    ("192.168.1.20", "192.168.1.20"),
    ("fe80::1%eth0", "fe80::1"),
    ("100.64.3.9", "100.64.3.9"),
    ("alice.example.org", REDACTED),                   # not an address
    ("", REDACTED),
])
def test_client_address_keeps_networks_not_users(address, expected):
    assert Redactor().client_address(address) == expected


def test_client_address_modes():
    assert Redactor(client_mode="full").client_address("203.0.113.77") == "203.0.113.77"
    assert Redactor(client_mode="off").client_address("10.0.0.1") is None
    redactor = Redactor()
    assert [redactor.client_address("203.0.113.9") for _ in range(3)] == ["203.0.113.0"] * 3  # remembered


# --------------------------------------------------------------------------- settings


def test_record_settings_from_environment(caplog):
    default = AgentSettings.load({})
    assert (default.record_query_values, default.record_path_values, default.record_user_agent) == (
        "default", "default", False)
    chosen = AgentSettings.load({"TAKEALOOK_RECORD_QUERY_VALUES": "all", "TAKEALOOK_RECORD_PATH_VALUES": "sku, Slug",
                                 "TAKEALOOK_RECORD_USER_AGENT": "true"})
    assert (chosen.record_query_values, chosen.record_path_names, chosen.record_user_agent) == (
        "all", frozenset({"sku", "slug"}), True)
    bad = AgentSettings.load({"TAKEALOOK_RECORD_QUERY_VALUES": "status,a b,q"})
    assert (bad.record_query_values, bad.record_query_names) == ("default", frozenset({"status", "q"}))
    assert "ignoring a b in TAKEALOOK_RECORD_QUERY_VALUES" in caplog.text
    assert default.record_client_address == "network"
    assert AgentSettings.load({"TAKEALOOK_RECORD_CLIENT_ADDRESS": "OFF"}).record_client_address == "off"
    assert AgentSettings.load({"TAKEALOOK_RECORD_CLIENT_ADDRESS": "ip"}).record_client_address == "network"
    assert "TAKEALOOK_RECORD_CLIENT_ADDRESS='ip' is not network, full or off" in caplog.text
    given = AgentSettings.load({}, record_query_values="all", record_path_names={"sku"}, record_user_agent=True)
    assert (given.record_query_values, given.record_path_names, given.record_user_agent) == ("all", {"sku"}, True)


# --------------------------------------------------------------------------- exception messages

PLANTED = st.text(alphabet=string.ascii_letters + string.digits, min_size=4, max_size=12).map(lambda v: "pl" + v)


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - to give it a traceback
        return caught


MESSAGES = [
    lambda v: ValueError(f"invalid literal for int() with base 10: '{v}'"),
    lambda v: KeyError(v),
    lambda v: ValueError(f'bad value "{v}" for field'),
    lambda v: RuntimeError(f"no user {v}@example.org here"),
    lambda v: ValueError(f"can't parse '{v}', it's {{'a': '{v}'}}"),
    lambda v: OSError(2, "No such file or directory", f"/uploads/{v}.pdf"),
    lambda v: ConnectionError(f"HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: "
                              f"/users/{v}?q={v} (Caused by x)"),
    lambda v: TimeoutError(f"timed out calling https://api.example.org/v1/people/{v}?email={v}%40x.org"),
]


@given(PLANTED, st.sampled_from(range(len(MESSAGES))))
@settings(max_examples=400)
def test_planted_values_never_reach_message_or_stacktrace(value, which):
    error = _raised(MESSAGES[which](value))
    for text in (errorscrub.describe(error), errorscrub.stacktrace(error), errorscrub.status_text(error),
                 errorscrub.scrub_text(f"{type(error).__name__}: {error}")):
        assert value not in text, text


@given(st.text(max_size=300))
@settings(max_examples=400)
def test_any_message_is_scrubbed_without_failing(text):
    error = _raised(ValueError(text))
    described = errorscrub.describe(error)
    assert re.search(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+", described) is None, described
    assert errorscrub.stacktrace(error).endswith(f"ValueError: {described}\n" if described else "ValueError\n")


def test_messages_about_code_keep_their_quotes_and_stack_keeps_frames():
    error = _raised(AttributeError("'NoneType' object has no attribute 'email'"))
    assert errorscrub.describe(error) == "'NoneType' object has no attribute 'email'"
    stack = errorscrub.stacktrace(error)
    assert "in _raised" in stack and "raise error" in stack
    assert stack.count("\n") == "".join(
        traceback.format_exception(type(error), error, error.__traceback__)).count("\n")


def test_string_literals_in_source_lines_are_blanked():
    try:
        {"Authorization": "Bearer planted-key-123"}["missing"]
    except KeyError as error:
        stack = errorscrub.stacktrace(error)
    assert "planted-key-123" not in stack and '{"?": "?"}["?"]' in stack


def test_unprintable_exception():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert errorscrub.describe(Broken()) == "?"


# --------------------------------------------------------------------------- real database errors


@pytest.fixture(scope="module")
def error_db(pg):
    dsn = pg.create_database("errors")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE NOT NULL, "
                     "age int CHECK (age >= 0), nick varchar(8))")
        conn.execute("INSERT INTO users VALUES (1, 'taken@example.org', 1, 'x')")
        conn.execute("CREATE FUNCTION fail_for(who text) RETURNS int AS $$ "
                     "BEGIN RAISE EXCEPTION 'no account for %', who; END $$ LANGUAGE plpgsql")
    yield dsn
    pg.drop_database(dsn)


@pytest.fixture(scope="module")
def connections(error_db):
    modern = psycopg.connect(error_db, autocommit=True)
    legacy = psycopg2.connect(error_db)
    legacy.autocommit = True
    yield {"psycopg": modern, "psycopg2": legacy}
    modern.close()
    legacy.close()


CASES = [  # (statement, parameters for a planted value v, SQLSTATE, what the message keeps)
    ("SELECT * FROM users WHERE id = %s", lambda v: (v,), "22P02", 'invalid input syntax for type integer: "?"'),
    ("INSERT INTO users (id, email) VALUES (2, %s), (3, %s)", lambda v: (f"{v}@example.org",) * 2, "23505",
     'duplicate key value violates unique constraint "users_email_key"'),
    ("INSERT INTO users (id, email, age) VALUES (3, %s, -1)", lambda v: (f"{v}@example.org",), "23514",
     'new row for relation "users" violates check constraint "users_age_check"'),
    ("INSERT INTO users (id, email) VALUES (1, %s)", lambda v: (f"{v}@example.org",), "23505",
     'duplicate key value violates unique constraint "users_pkey"'),
    ("SELECT fail_for(%s)", lambda v: (v,), "P0001", "message not recorded: raised by a database function"),
    ("UPDATE users SET nick = %s WHERE id = 1", lambda v: (v * 3,), "22001",
     "value too long for type character varying(8)"),
    ("SELECT * FROM users WHERE emial = %s", lambda v: (v,), "42703", 'column "emial" does not exist'),
]


@given(PLANTED, st.sampled_from(range(len(CASES))), st.sampled_from(["psycopg", "psycopg2"]))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_database_errors_keep_class_sqlstate_and_shape_only(connections, value, which, driver):
    statement, params, sqlstate, kept = CASES[which]
    cursor = connections[driver].cursor()
    with pytest.raises(Exception) as raised:
        cursor.execute(statement, params(value))
    error = raised.value
    text, _ = scrub(statement)
    described = errorscrub.describe(error, text)
    assert described == f"{kept} (SQLSTATE {sqlstate})"
    stack = errorscrub.stacktrace(error, text)
    assert stack.endswith(f"{errorscrub.qualified_name(type(error))}: {described}\n")
    for secret in (value, "taken@example.org", "DETAIL", "LINE 1"):
        assert secret not in described and secret not in stack


def test_a_wrapper_raised_from_a_database_error_gets_its_message(connections):
    cursor = connections["psycopg2"].cursor()
    try:
        try:
            cursor.execute("INSERT INTO users (id, email) VALUES (9, %s)", ("taken@example.org",))
        except psycopg2.Error as driver_error:
            raise RuntimeError(f"({type(driver_error).__name__}) {driver_error}\n[parameters: "
                               f"{{'email': 'taken@example.org'}}]") from driver_error
    except RuntimeError as error:
        described = errorscrub.describe(error)
        stack = errorscrub.stacktrace(error)
    assert described == 'duplicate key value violates unique constraint "users_email_key" (SQLSTATE 23505)'
    assert "taken@example.org" not in stack and stack.count("SQLSTATE 23505") == 2


# --------------------------------------------------------------------------- statement texts

SQL_PLACES = [
    "SELECT * FROM users WHERE email = '{v}'", "SELECT * FROM users WHERE note = E'{v}\\'s'",
    "SELECT $${v}$$", "SELECT $tag${v}$tag$ FROM t", "SELECT 1 /* {v} */ FROM t", "SELECT 1 -- {v}\nFROM t",
    "SELECT U&'{v}'", "INSERT INTO t VALUES ('{v}'' it''s', 2)", "SELECT * FROM t WHERE a = '{v}", "SELECT '{v}'::int",
    "SELECT * FROM t WHERE a IN ('x', '{v}') AND b = $1 AND c = %s AND d = %(name)s",
]


@given(PLANTED, st.sampled_from(SQL_PLACES))
@settings(max_examples=300)
def test_literals_and_comments_never_survive_the_statement_scrub(value, place):
    text, _ = scrub(place.format(v=value))
    assert value not in text, text
    for placeholder in ("$1", "%s", "%(name)s"):
        assert (placeholder in place) == (placeholder in text) or placeholder == "%s"
