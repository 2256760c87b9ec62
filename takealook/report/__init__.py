"""The report model and its renderers.

Analyses return frozen dataclasses. Adapters in this package turn them into a
``Document`` (``model.py``), which the generic renderers write as text,
Markdown or HTML (``render.py``); JSON follows the contracts of docs/json.md
(JSON Schemas in docs/schemas/) and is built by each adapter's ``contract``.
"""
