"""The JSON contracts of docs/json.md, as the tests check them: real output against docs/schemas/*.schema.json.

``check(name, data)`` validates ``data`` against ``docs/schemas/<name>.schema.json``
(references between the schema files resolve among themselves). The schemas list
the documented keys as ``required`` and allow more: a command may add keys, but
removing or retyping a documented one fails the test that ran it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@lru_cache(maxsize=None)
def _validator(name: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    resources = [(path.name, Resource.from_contents(json.loads(path.read_text())))
                 for path in sorted(SCHEMAS.glob("*.schema.json"))]
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema, registry=registry)


def problems(name: str, data) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message[:300]}"
            for error in _validator(name).iter_errors(data)]


def check(name: str, data) -> None:
    """Fail with every difference between ``data`` and the documented contract ``name``."""
    found = problems(name, data)
    assert found == [], f"{name} does not follow docs/schemas/{name}.schema.json:\n" + "\n".join(found[:20])
