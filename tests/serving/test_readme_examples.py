"""The README's curl examples, sent as pasted to a real server of the breast-cancer model: each gets a 200."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import httpx
import pytest

from kfkit.deploy.local import start_server, stop_server
from kfkit.registry import publish_folder

README = Path(__file__).resolve().parents[2] / "README.md"
CURL = re.compile(r"^curl .*?(?=^#|^```)", re.S | re.M)


LOCAL = "http://127.0.0.1:8080"


def _examples() -> list[tuple[str, str]]:
    """(URL, body) of every README curl command that posts a body."""
    found = []
    for block in CURL.findall(README.read_text()):
        words = shlex.split(block.replace("\\\n", " "), posix=True)
        url = next(w for w in words if w.startswith("http://"))
        found.append((url, words[words.index("-d") + 1]))
    return found


@pytest.mark.slow
def test_readme_curl_examples_are_answered_as_pasted(trained_breast_cancer, tmp_path, free_port):
    examples = _examples()
    for _, body in examples:  # the cluster examples too: a body that is not JSON is wrong wherever it goes
        json.loads(body)
    local = [(url.removeprefix(LOCAL), body) for url, body in examples if url.startswith(LOCAL)]
    assert {path.split("/")[1] for path, _ in local} == {"v1", "v2"}, examples  # both protocols shown
    version = publish_folder(trained_breast_cancer["model"], registry_uri=f"file://{tmp_path}/reg", name="bc")
    endpoint = start_server(version.uri, model_name="breast-cancer-mlp", http_port=free_port(), grpc_port=free_port(),
                            log_path=tmp_path / "server.log")  # fmt: skip
    try:
        for path, body in local:
            answer = httpx.post(f"http://127.0.0.1:{endpoint.http_port}{path}", content=body,
                                headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
            assert answer.status_code == 200, (path, answer.text)
            assert "probability" in answer.text
    finally:
        stop_server(endpoint)
