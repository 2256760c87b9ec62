"""Old and new semantic-convention names land in the same typed columns, with their meaning kept."""

from takealook.collector.semconv import typed_fields

SERVER, CLIENT = 2, 3


def test_server_address_is_the_host_called_under_both_conventions():
    old_server = {"http.method": "GET", "net.host.name": "orders.internal", "net.peer.name": "10.0.0.7"}
    new_server = {"http.request.method": "GET", "server.address": "orders.internal", "client.address": "10.0.0.7"}
    old_client = {"http.method": "GET", "net.peer.name": "orders.internal", "http.url": "http://orders.internal/x?t=1"}
    for attrs, kind in ((old_server, SERVER), (new_server, SERVER), (old_client, CLIENT)):
        method, _, _, _, full, address, *_ = typed_fields(attrs, kind)
        assert (method, address) == ("GET", "orders.internal")
    assert typed_fields(old_client, CLIENT)[4] == "http://orders.internal/x"


def test_statement_names_and_fingerprint():
    old = typed_fields({"db.system": "postgresql", "db.name": "shop", "db.statement": "SELECT 1 WHERE a = %s"}, CLIENT)
    new = typed_fields({"db.system.name": "postgresql", "db.namespace": "shop", "db.query.text": "SELECT 1 WHERE a = $1"},
                       CLIENT)
    assert old[6:9] == ("postgresql", "shop", "SELECT 1 WHERE a = %s")
    assert old[9] == new[9] and old[9] is not None
