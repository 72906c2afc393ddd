"""Bytes that are not valid HTTP get a JSON 4xx naming the problem, over a raw socket to a live server.

uvicorn answers these with a plain-text 400 and buffers a request head of any size; kfkit's protocol
(:mod:`kfkit.serving.http_protocol`) answers ``{"error": ...}``, counts them, and stays ready. The framing a
well-formed request can still get wrong (Content-Length, the body limit) is checked by
:mod:`kfkit.serving.http_framing`, tested at the end.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from kfkit.errors import InvalidInput
from kfkit.serving.http_framing import check_body_size, parse_content_length
from kfkit.serving.http_protocol import MAX_HEAD_BYTES, protocol_class
from kfkit.serving.json_decoding import parse_json
from kfkit.serving.v2_protocol import parse_binary_header_length

HOST = "127.0.0.1"
V2 = "/v2/models/test-mlp/infer"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _exchange(port: int, data: bytes, *, split_at: int = 0, timeout_s: float = 10.0) -> Answer:
    """Send ``data`` on a fresh connection (in two reads, if ``split_at``) and read the whole answer.

    A reset before the answer, or no answer at all, fails the test.
    """
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        try:
            if split_at:
                sock.sendall(data[:split_at])
                time.sleep(0.2)  # the server parses the first part alone
            sock.sendall(data[split_at:])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer before reading everything: the answer below is what counts
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError as e:
            pytest.fail(f"connection reset after {len(received)} bytes: {received[:200]!r} ({e})")
    assert received, f"connection closed without an answer to {data[:80]!r}"
    return _parse(received)


def _parse(received: bytes) -> Answer:
    head, sep, body = received.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {received[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", status_line)
    assert match, f"bad status line {status_line!r}"
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(match[1]), headers, body)


def _request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {HOST}", *headers, "", ""]).encode() + body


# (name, bytes sent, status expected, words the error must contain)
MALFORMED = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400, "invalid method"),
    ("HTTP/0.9 request line", b"GET /v2/health/ready\r\n\r\n", 400, "http/0.9"),
    ("unknown HTTP version", b"GET /v2/health/ready HTTP/9.9\r\nHost: x\r\n\r\n", 400, "http version"),
    ("space in header name", _request("GET", "/v2/health/ready", "Bad Header: x"), 400, "header token"),
    ("control byte in header value", _request("GET", "/v2/health/ready", "X-Id: a\x01b"), 400, "header value"),
    ("header line without colon", _request("GET", "/v2/health/ready", "NoColonHere"), 400, "header token"),
    (
        "bad chunk size",
        _request(
            "POST", V2, "Content-Type: application/json", "Transfer-Encoding: chunked", body=b"zz\r\n{}\r\n0\r\n\r\n"
        ),
        400,
        "chunk size",
    ),
    (
        "duplicate Content-Length",
        _request("POST", V2, "Content-Length: 2", "Content-Length: 3", body=b"{}"),
        400,
        "duplicate content-length",
    ),
    ("non-numeric Content-Length", _request("POST", V2, "Content-Length: abc", body=b"{}"), 400, "content-length"),
    ("negative Content-Length", _request("POST", V2, "Content-Length: -5", body=b"{}"), 400, "content-length"),
    (
        "Content-Length with chunked",
        _request("POST", V2, "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        "transfer-encoding",
    ),
    ("unparseable URL", _request("GET", "http://[::1/v2/health/ready"), 400, "invalid url"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "malformed http request"),
    ("one header over the limit", _request("GET", "/v2/health/ready", "X-Big: " + "a" * 1_000_000), 431, "exceed"),
    (
        "many headers over the limit",
        _request("GET", "/v2/health/ready", *(f"X-H{i}: v" for i in range(MAX_HEAD_BYTES // 8))),
        431,
        "exceed",
    ),
    ("URL over the limit", _request("GET", "/v2/" + "a" * (MAX_HEAD_BYTES + 10)), 431, "exceed"),
]


@pytest.fixture(scope="module")
def server(publish_random_mlp, tmp_path_factory):
    """One live kfkit server for this module, and the model it serves."""
    from kfkit.deploy.local import free_port, start_server, stop_server

    model = publish_random_mlp("framing", seed=11, n_rows=4)
    endpoint = start_server(
        model.uri,
        model_name="test-mlp",
        http_port=free_port(),
        grpc_port=free_port(),
        log_path=tmp_path_factory.mktemp("framing-logs") / "server.log",
    )
    yield endpoint, model
    stop_server(endpoint)


def _assert_json_error(answer: Answer, status: int, words: str) -> str:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer.headers
    assert int(answer.headers["content-length"]) == len(answer.body), answer
    assert answer.headers["connection"] == "close", answer.headers
    error = json.loads(answer.body)["error"]
    assert isinstance(error, str) and words in error.lower(), error
    return error


def test_malformed_http_gets_a_json_4xx_and_the_server_stays_ready(server):
    """Each malformed request: a JSON 4xx that names the problem and the fix; counted; server still serves."""
    import httpx

    endpoint, model = server
    port = endpoint.http_port
    for name, data, status, words in MALFORMED:
        error = _assert_json_error(_exchange(port, data), status, words)
        if status == 400:
            assert error.startswith("malformed HTTP request: ") and "send a valid HTTP/1.1 request" in error, name
        else:
            assert f"{MAX_HEAD_BYTES} bytes" in error and "send smaller headers" in error, name

    with httpx.Client(base_url=endpoint.base_url, timeout=30, trust_env=False) as client:
        assert client.get("/v2/health/ready").status_code == 200
        body = {"inputs": [{"name": "features", "shape": [4, 30], "datatype": "FP32", "data": model.rows.tolist()}]}
        response = client.post(V2, json=body)
        assert response.status_code == 200, response.text
        probability = next(o for o in response.json()["outputs"] if o["name"] == "probability")["data"]
        np.testing.assert_allclose(probability, model.expected, atol=1e-6)
        metrics = client.get("/metrics").text
    for status in (400, 431):
        expected = sum(1 for case in MALFORMED if case[2] == status)
        line = f'kfkit_requests_total{{model="test-mlp",protocol="http",status="{status}"}} {float(expected)}'
        assert line in metrics.splitlines(), f"{line!r} not in /metrics"


def test_valid_requests_on_one_connection_are_not_rejected(server):
    """Keep-alive and pipelined requests, and a head that arrives in pieces, pass the head-size bound."""
    endpoint, model = server
    row = json.dumps(
        {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [model.rows[0].tolist()]}]}
    )
    # A ~100 KB body (JSON whitespace) first, so a read holds its tail and the next request's head.
    big = row.encode() + b" " * 100_000
    first = _request("POST", V2, "Content-Type: application/json", f"Content-Length: {len(big)}", body=big)
    second = _request("POST", V2, "Content-Type: application/json", f"Content-Length: {len(row)}", body=row.encode())
    split = len(first) + 40  # mid-way through the second request's head
    with socket.create_connection((HOST, endpoint.http_port), timeout=10) as sock:
        sock.sendall((first + second)[:split])
        time.sleep(0.2)
        sock.sendall((first + second)[split:])
        with sock.makefile("rb") as stream:
            answers = [_read_answer(stream), _read_answer(stream)]
    assert [a.status for a in answers] == [200, 200], answers
    assert all(json.loads(a.body)["outputs"] for a in answers)


@pytest.mark.parametrize(("extra", "status"), [(8_000, 431), (-8_000, 200)])
def test_head_size_counts_across_reads(server, extra, status):
    """A head that ends in its second read is measured whole: over the limit 431, under it served."""
    endpoint, _ = server
    first = "X-A: " + "a" * 60_000
    second = "X-B: " + "b" * (MAX_HEAD_BYTES - 60_000 + extra)
    data = _request("GET", "/v2/health/ready", first, second, "Connection: close")
    answer = _exchange(endpoint.http_port, data, split_at=data.index(b"X-B"))
    assert answer.status == status, answer
    if status == 431:
        _assert_json_error(answer, 431, "bytes of url and header fields")


def _read_answer(stream) -> Answer:
    """One Content-Length-framed answer from a kept-alive connection's buffered reader."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, f"connection closed after {head[:300]!r}"
        head += line
    answer = _parse(head)
    answer.body = stream.read(int(answer.headers["content-length"]))
    return answer


def test_h11_protocol_answers_json_too(free_port):
    """The h11 fallback (uvicorn without httptools) gives the same JSON answers."""
    import uvicorn

    async def app(scope, receive, send):  # never reached by a malformed request
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    rejected: list[int] = []
    config = uvicorn.Config(
        app, host=HOST, port=port, http=protocol_class(on_rejected=rejected.append, use_h11=True),
        lifespan="off", log_level="error",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        _assert_json_error(_exchange(port, b"GARBAGE\r\n\r\n"), 400, "illegal request line")
        _assert_json_error(_exchange(port, _request("GET", "/", "Bad Header: x")), 400, "illegal header line")
        _assert_json_error(_exchange(port, _request("GET", "/", "X-Big: " + "a" * 200_000)), 431, "exceed")
        assert _exchange(port, _request("GET", "/", "Connection: close")).status == 204
        assert rejected == [400, 400, 431]
    finally:
        server.should_exit = True
        thread.join(10)


def test_http_level_checks():
    assert parse_content_length(None) is None and parse_content_length("12") == 12
    with pytest.raises(InvalidInput, match=r"content-length: '1e3' is not a non-negative integer"):
        parse_content_length("1e3")
    check_body_size(10, 10)
    with pytest.raises(InvalidInput, match=r"11 bytes is over this server's limit of 10 bytes") as caught:
        check_body_size(11, 10)
    assert caught.value.status_code == 413
    assert parse_binary_header_length(" 12 ", 20) == 12
    with pytest.raises(InvalidInput, match=r"NaN and Infinity are not JSON"):
        parse_json(b'{"instances": [[NaN]]}')
    with pytest.raises(InvalidInput, match=r"request body is empty"):
        parse_json(b"  ")
