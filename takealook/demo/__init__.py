"""``takealook demo``: the whole story on three small apps with problems built in.

``run.py`` starts a private PostgreSQL with three databases (``data.py`` seeds
them with hundreds of thousands of rows), the embedded collector, and three apps
shipped here in ``apps/`` under ``takealook-run``: a Flask gateway, a Django
orders service and a Flask inventory service calling each other over HTTP on
127.0.0.1. Built in: an N+1 in the orders listing, a missing index on the
inventory's hot stock lookup, and two independent calls the gateway's
dashboard makes one after the other. Then it load-tests the gateway, audits
the databases and the traces, applies the top index suggestion (in the demo's
own database, the only place takealook ever creates an index), load-tests
again, compares, and writes the report.
"""
