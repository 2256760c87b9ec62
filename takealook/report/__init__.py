"""The report model and its renderers.

Analyses return frozen dataclasses. Adapters in this package turn them into a
``Document`` (``model.py``), which the generic renderers write as text,
Markdown or HTML (``render.py``); JSON follows the contract shapes of DESIGN.md
and is built by each adapter's ``to_json``.
"""
