"""takealook's load tests: Locust suites from traces, headless runs recorded raw, before/after comparison.

Modules, one question each:

- ``generate``  a locustfile from the span store (``load generate``)
- ``runner``    start Locust in a subprocess and make a run folder (``load run``)
- ``runs``      run folders: metadata, lookup, schema version
- ``samples``   the raw samples file (``samples.csv.gz``)
- ``stats``     percentiles, the block bootstrap, verdicts (pure Python)
- ``compare``   runs before vs after, per endpoint (``load compare``)
- ``recorder``, ``open_model``, ``_locust_closed``, ``_locust_open``: the Locust
  plugin, loaded only inside the Locust subprocess

Importing this package, or any module but those four, never imports locust
(which monkey-patches the process with gevent). See docs/load.md.
"""
