"""docs/json.md and docs/schemas/ are the JSON contracts: complete, valid, and the only ones cited."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((ROOT / "docs" / "schemas").glob("*.schema.json"))
JSON_MD = (ROOT / "docs" / "json.md").read_text()


def test_every_command_that_writes_json_has_a_schema():
    names = {path.name.removesuffix(".schema.json") for path in SCHEMAS}
    assert names >= {"traces-report", "db-audit", "db-indexes", "load-run", "load-run-metadata", "load-compare",
                     "report", "collect-status"}


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_each_schema_is_valid_and_described_in_json_md(path):
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == path.name and schema.get("title") and schema.get("description")
    assert f"(schemas/{path.name})" in JSON_MD, f"docs/json.md does not link {path.name}"
    required = schema.get("required", []) + [key for part in schema.get("allOf", [])
                                             for key in _resolve(schema, part).get("required", [])]
    missing = [key for key in required if f"`{key}`" not in JSON_MD]
    assert missing == [], f"docs/json.md does not name these keys of {path.name}"


def _resolve(schema: dict, part: dict) -> dict:
    ref = part.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return schema["$defs"][ref.split("/")[-1]]
    return part


def test_nothing_cites_a_contract_outside_the_repository():
    cited = []
    for folder in ("docs", "takealook", "agent", "collector", "analyzers", "loadtests", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".json") and re.search(r"DESIGN\.md", path.read_text(errors="replace")):
                if path.name != "test_json_docs.py":
                    cited.append(str(path.relative_to(ROOT)))
    assert cited == []
