"""``gearshift keys create | ls | revoke``: the key is printed once, listings never show a key
or hash, revocation is recorded, and bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from scheduler.cli import app
from scheduler.tenants import KeyFile, parse_key


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    result = invoke(
        "keys",
        "create",
        "--tenant",
        "acme",
        "--classes",
        "interactive,standard",
        "--default-class",
        "interactive",
        "--rpm",
        "60",
        "--tpm",
        "10000",
        "--keys-file",
        str(path),
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed[0] in result.stderr and key not in result.stderr
    record = KeyFile(path).load().keys[parsed[0]]
    assert (record.tenant, record.rpm, record.tpm) == ("acme", 60, 10000)
    assert {c.value for c in record.classes} == {"interactive", "standard"}
    assert record.default_class.value == "interactive"
    assert record.verify(parsed[1])
    assert parsed[1] not in path.read_text()


def test_create_as_json_carries_the_key_and_defaults(tmp_path: Path) -> None:
    result = invoke(
        "keys", "create", "--tenant", "t", "-o", "json", "--keys-file", str(tmp_path / "k")
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert parse_key(data["key"]) is not None
    assert data["classes"] == ["standard", "batch"] and data["default_class"] == "standard"
    assert data["rpm"] is None and data["revoked"] is False


def test_ls_and_revoke(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    keys = [
        invoke("keys", "create", "--tenant", t, "--keys-file", path).stdout.strip() for t in "ab"
    ]
    key_id = (parse_key(keys[0]) or ("", ""))[0]
    result = invoke("keys", "revoke", key_id, "--keys-file", path)
    assert result.exit_code == 0 and key_id in result.stderr
    as_json = json.loads(invoke("keys", "ls", "-o", "json", "--keys-file", path).stdout)
    as_yaml = yaml.safe_load(invoke("keys", "ls", "-o", "yaml", "--keys-file", path).stdout)
    assert as_json == as_yaml
    assert [(row["tenant"], row["revoked"]) for row in as_json] == [("a", True), ("b", False)]
    assert set(as_json[0]) == {
        "id",
        "tenant",
        "classes",
        "default_class",
        "rpm",
        "tpm",
        "created_at",
        "revoked",
    }
    table = invoke("keys", "ls", "--keys-file", path)
    assert table.exit_code == 0 and "2 keys" in table.stdout
    assert all(key not in table.stdout for key in keys)


def test_ls_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    result = invoke("keys", "ls", "-o", "json", "--keys-file", str(tmp_path / "none.json"))
    assert result.exit_code == 0 and json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--tenant", "a b"],
        ["create", "--tenant", "t", "--classes", "gold"],
        ["create", "--tenant", "t", "--classes", ","],
        ["create", "--tenant", "t", "--classes", "batch", "--default-class", "standard"],
        ["create", "--tenant", "t", "--default-class", "gold"],
        ["create", "--tenant", "t", "--rpm", "0"],
        ["revoke", "0123456789ab"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = invoke("keys", *args, "--keys-file", str(tmp_path / "keys.json"))
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "keys.json").exists()


def test_a_malformed_key_file_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[1, 2]")
    result = invoke("keys", "ls", "--keys-file", str(path))
    assert result.exit_code == 2 and "malformed" in result.stderr
