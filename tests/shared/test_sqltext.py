import pytest

from takealook.sqltext import fingerprint, to_dollar_params


@pytest.mark.parametrize("given, expected", [
    ("SELECT * FROM t WHERE a = %s AND b = %s", "SELECT * FROM t WHERE a = $1 AND b = $2"),
    ("SELECT * FROM t WHERE a = %(x)s OR b = %(x)s OR c = %(y)s", "SELECT * FROM t WHERE a = $1 OR b = $1 OR c = $2"),
    ("SELECT * FROM t WHERE name LIKE 'ab%s' AND a = %s", "SELECT * FROM t WHERE name LIKE 'ab%s' AND a = $1"),
    ("SELECT 100 %% 7, %s", "SELECT 100 % 7, $1"),
    ("SELECT $1 -- 50%s\n", "SELECT $1 -- 50%s\n"),
    ("SELECT * FROM t", "SELECT * FROM t"),
])
def test_placeholders_become_dollar_params(given, expected):
    assert to_dollar_params(given) == expected


def test_same_fingerprint_for_literal_driver_and_server_placeholders():
    fps = {fingerprint("SELECT * FROM orders WHERE id = 7"),
           fingerprint("SELECT * FROM orders WHERE id = %s"),
           fingerprint("select * from orders where id = $1"),
           fingerprint("SELECT * FROM orders WHERE id = %(id)s")}
    assert len(fps) == 1 and None not in fps
    assert fingerprint("SELECT * FROM orders WHERE customer_id = 7") not in fps


def test_unparseable_text_has_no_fingerprint():
    assert fingerprint("SELECT * FROM orders WHERE id = ") is None
    assert fingerprint("") is None
