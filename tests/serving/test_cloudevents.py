"""CloudEvents requests, binary and structured mode: recognised, validated, unwrapped."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from kfkit.errors import InvalidInput
from kfkit.serving.cloudevents import parse_cloudevent


def test_binary_cloudevent_needs_every_required_header_and_a_body():
    full = {
        "ce-specversion": "1.0",
        "ce-id": "e1",
        "ce-source": "s",
        "ce-type": "t",
        "content-type": "application/json",
    }
    event = parse_cloudevent(full, b'{"instances": []}')
    assert event.binary and event.attributes["id"] == "e1" and event.data == b'{"instances": []}'
    with pytest.raises(InvalidInput, match=r"missing or has empty 'ce-source', 'ce-type'"):
        parse_cloudevent({"ce-id": "e1", "ce-specversion": "1.0"}, b"{}")
    with pytest.raises(InvalidInput, match=r"CloudEvent 'e1' has an empty body"):
        parse_cloudevent(full, b"")
    with pytest.raises(InvalidInput, match=r"ce-specversion: '9' is not supported"):
        parse_cloudevent({**full, "ce-specversion": "9"}, b"{}")
    assert parse_cloudevent({"content-type": "application/json"}, b"{}") is None


def test_structured_cloudevent_envelope():
    envelope = {"specversion": "1.0", "id": "s1", "source": "s", "type": "t", "data": {"instances": [[1]]}}
    headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    event = parse_cloudevent(headers, json.dumps(envelope).encode())
    assert not event.binary and event.data == {"instances": [[1]]} and event.attributes["id"] == "s1"
    encoded = {**{k: v for k, v in envelope.items() if k != "data"}, "data_base64": base64.b64encode(b"[1]").decode()}
    assert parse_cloudevent(headers, json.dumps(encoded).encode()).data == [1]
    with pytest.raises(InvalidInput, match=r"missing or has non-string 'id'"):
        parse_cloudevent(headers, json.dumps({**envelope, "id": 5}).encode())
    with pytest.raises(InvalidInput, match=r"'s1' has no data"):
        parse_cloudevent(headers, json.dumps({k: v for k, v in envelope.items() if k != "data"}).encode())


def test_the_parser_imports_no_torch_kserve_or_numpy():
    """The drift service imports it from its own environment (no orjson, no simdjson there either)."""
    code = (
        "import sys; sys.modules['orjson'] = None\n"
        "from kfkit.serving.cloudevents import parse_cloudevent\n"
        "event = parse_cloudevent({'content-type': 'application/cloudevents+json'},\n"
        '    b\'{"specversion": "1.0", "id": "a", "source": "s", "type": "t", "data": [1]}\')\n'
        "assert event.data == [1], event\n"
        "print(','.join(m for m in ('torch', 'kserve', 'numpy', 'simdjson', 'tensorflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
