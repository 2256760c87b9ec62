"""takealook's load tests: Locust suites from traces, headless runs recorded raw, before/after comparison.

Modules, one question each:

- ``generate``  a locustfile from the span store (``load generate``)
- ``suitefile`` the locustfile's text: tasks, weighted values, login, headers
- ``login``     forms, tokens, login redirects and ``${VAR}`` settings (no locust)
- ``marking``   trace context on load requests: the mark, a traceparent per redirect hop
- ``runner``    start Locust in a subprocess and make a run folder (``load run``)
- ``runs``      run folders: metadata, lookup, schema version
- ``samples``   the raw samples file (``samples.csv.gz``)
- ``stats``     percentiles, the block bootstrap, verdicts (pure Python)
- ``compare``   runs before vs after, per endpoint (``load compare``)
- ``recorder``, ``open_model``, ``_locust_closed``, ``_locust_open``: the Locust
  plugin, loaded only inside the Locust subprocess
- ``users``     what generated suites import: a Locust user that logs in, marks
  its traffic and counts "not logged in" as a failure

Importing this package, or any module but those five, never imports locust
(which monkey-patches the process with gevent). See docs/load.md.
"""
