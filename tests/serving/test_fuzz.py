"""Fuzz a live server with malformed V1/V2 REST and gRPC requests: never a 5xx, always a JSON error, still ready.

The requests are generated systematically from one seed: every field of a valid V1, V2 JSON, V2 binary
and CloudEvent request replaced by each of a set of wrong values, every header variant, then seeded
random truncations and byte flips of valid bodies. gRPC requests get the same treatment.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from collections import Counter
from dataclasses import dataclass, field

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

pytestmark = pytest.mark.slow

SEED = 20240905
N = 30
WRONG_VALUES = [None, 0, -1, 1.5, "x", "", [], {}, [1, 2], True, [[None]], {"a": 1}, "FP32", 2**70]
STRUCTURED = {"content-type": "application/cloudevents+json"}
ALLOWED_GRPC = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass
class RestCase:
    name: str
    path: str  # "v1", "v2", or a literal path
    body: bytes = b""
    headers: dict[str, str | bytes] = field(default_factory=dict)
    method: str = "POST"


def _row(rng: random.Random) -> list[float]:
    return [round(rng.uniform(-5, 5), 3) for _ in range(N)]


def _json(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _v1_cases(rng: random.Random) -> list[RestCase]:
    row = _row(rng)
    names = [f"x{i:02d}" for i in range(N)]
    named = dict(zip(names, row, strict=True))
    instances = [
        None, 1, "rows", {}, [], [[]], row, [row[:29]], [[*row, 1.0]], [row, row[:3]], [[row]],
        [[*row[:5], "a", *row[6:]]],
        [[None] * N], [[True] * N], [[1e39] * N], [[-1e39, *row[1:]]], [[float("nan"), *row[1:]]],
        [[float("inf")] * N], [{k: v for k, v in named.items() if k != "x07"}], [{**named, "amount": 1.0}],
        [{**named, "x03": "1.5"}], [{**named, "x03": None}], [named, row], [{}], [{"x00": [1.0]}], [[[1.0] * N]],
    ]  # fmt: skip
    cases = [
        RestCase(f"v1 instances={json.dumps(i, allow_nan=True)[:40]}", "v1", _json({"instances": i})) for i in instances
    ]
    # the same, 40 times over: bodies over 1 KB, which the server decodes with simdjson, not orjson
    cases += [
        RestCase(f"v1 40x instances={json.dumps(i, allow_nan=True)[:40]}", "v1", _json({"instances": i * 40}))
        for i in instances
        if isinstance(i, list) and i
    ]
    for body in [b"", b"{", b"[]", b"null", b'"text"', b"42", b'{"instances": [[1,2,}', b"\xff\xfe\x00", b"{}" * 3]:
        cases.append(RestCase(f"v1 raw {body[:20]!r}", "v1", body))
    cases.append(RestCase("v1 other keys", "v1", _json({"inputs": [row]})))
    return cases


def _v2_valid(rng: random.Random, rows: int = 2) -> dict:
    data = [_row(rng) for _ in range(rows)]
    return {"id": "fuzz", "inputs": [{"name": "features", "shape": [rows, N], "datatype": "FP32", "data": data}]}


def _v2_cases(rng: random.Random) -> list[RestCase]:
    base = _v2_valid(rng, rows=8)  # over 1 KB: the server decodes these with simdjson, not orjson
    assert len(_json(base)) > 1024
    cases = []
    # every top-level and tensor field: removed, or replaced by each wrong value
    for key in ("id", "inputs", "outputs", "parameters"):
        for value in [*WRONG_VALUES, "<removed>"]:
            body = copy.deepcopy(base)
            if value == "<removed>":
                body.pop(key, None)
            else:
                body[key] = value
            cases.append(RestCase(f"v2 {key}={value!r:.20}", "v2", _json(body)))
    for key in ("name", "shape", "datatype", "data", "parameters"):
        for value in [*WRONG_VALUES, "<removed>"]:
            body = copy.deepcopy(base)
            if value == "<removed>":
                body["inputs"][0].pop(key, None)
            else:
                body["inputs"][0][key] = value
            cases.append(RestCase(f"v2 input.{key}={value!r:.20}", "v2", _json(body)))
    for shape in ([2], [2, 29], [3, N], [1, 2, N], [-2, -N], [0, N], [2**40, N], [2.0, 30.0], ["2", "30"]):
        body = copy.deepcopy(base)
        body["inputs"][0]["shape"] = shape
        cases.append(RestCase(f"v2 shape={shape}", "v2", _json(body)))
    for datatype in ("BYTES", "BOOL", "fp32", "FP8", "", "STRING"):
        body = copy.deepcopy(base)
        body["inputs"][0]["datatype"] = datatype
        cases.append(RestCase(f"v2 datatype={datatype}", "v2", _json(body)))
    bad_outputs = [
        [{"name": "nope"}], [{"name": "label"}, {"name": "label"}], [{"nam": "label"}], [{"name": 3}],
        [{"name": "label", "parameters": {"binary_data": "yes"}}], [{"name": "label", "extra": 1}],
    ]  # fmt: skip
    for outputs in bad_outputs:
        cases.append(RestCase(f"v2 outputs={outputs}", "v2", _json({**base, "outputs": outputs})))
    cases.append(RestCase("v2 two inputs", "v2", _json({"inputs": base["inputs"] * 2})))
    cases.append(RestCase("v2 unknown field", "v2", _json({**base, "input": base["inputs"]})))
    cases.append(
        RestCase("v2 binary_data_output not bool", "v2", _json({**base, "parameters": {"binary_data_output": 1}}))
    )
    for body in [b"", b"{", b"[]", b"null", b"[1,2,3]", b"\x00" * 16, b'{"inputs": [{"name": "f", "data": [NaN]}]}']:
        cases.append(RestCase(f"v2 raw {body[:20]!r}", "v2", body))
    return cases


def _binary_body(rows: np.ndarray, *, size: int | None = None, datatype: str = "FP32", shape=None, extra=None):
    raw = rows.astype("<f4").tobytes()
    tensor = {"name": "features", "shape": list(shape or rows.shape), "datatype": datatype,
              "parameters": {"binary_data_size": len(raw) if size is None else size}}  # fmt: skip
    header = json.dumps({"inputs": [tensor], **(extra or {})}).encode()
    return header, raw


def _binary_cases(rng: random.Random) -> list[RestCase]:
    rows = np.asarray([_row(rng) for _ in range(2)], dtype=np.float32)
    header, raw = _binary_body(rows)
    cases = []
    for value in (
        "abc",
        "-1",
        "0",
        "1e3",
        "",
        "+5",
        "1 2",
        str(len(header) + len(raw) + 10),
        "9" * 30,
        "0x10",
        b"\xb2",
    ):
        cases.append(
            RestCase(f"binary header={value!r}", "v2", header + raw, {"inference-header-content-length": value})
        )
    good = {"inference-header-content-length": str(len(header))}
    cases.append(RestCase("binary truncated", "v2", header + raw[:-7], good))
    cases.append(RestCase("binary padded", "v2", header + raw + b"\x00" * 4, good))
    cases.append(RestCase("binary tensor only", "v2", header, good))
    for kwargs in ({"size": 8}, {"size": -1}, {"size": "120"}, {"datatype": "FP64"}, {"datatype": "BYTES"},
                   {"shape": [3, N]}, {"shape": [2]}):  # fmt: skip
        h, r = _binary_body(rows, **kwargs)
        cases.append(RestCase(f"binary {kwargs}", "v2", h + r, {"inference-header-content-length": str(len(h))}))
    no_inputs = json.dumps({"id": "x", "parameters": {"binary_data_output": True}}).encode()
    length = {"inference-header-content-length": str(len(no_inputs))}
    cases.append(RestCase("binary without inputs", "v2", no_inputs + raw, length))
    both = json.dumps({"inputs": [{"name": "f", "shape": [2, N], "datatype": "FP32", "data": rows.ravel().tolist(),
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()  # fmt: skip
    cases.append(RestCase("binary and data", "v2", both + raw, {"inference-header-content-length": str(len(both))}))
    cases.append(RestCase("binary json broken", "v2", b"{not json" + raw, {"inference-header-content-length": "9"}))
    return cases


def _cloudevent_cases(rng: random.Random) -> list[RestCase]:
    body = _json({"instances": [_row(rng)]})
    full = {
        "ce-specversion": "1.0",
        "ce-id": "e1",
        "ce-source": "fuzz",
        "ce-type": "t",
        "content-type": "application/json",
    }
    cases = []
    for path in ("v1", "v2"):
        payload = body if path == "v1" else _json(_v2_valid(rng))
        for missing in ("ce-specversion", "ce-id", "ce-source", "ce-type"):
            headers = {k: v for k, v in full.items() if k != missing}
            cases.append(RestCase(f"ce {path} without {missing}", path, payload, headers))
            cases.append(RestCase(f"ce {path} empty {missing}", path, payload, {**full, missing: ""}))
        cases.append(RestCase(f"ce {path} empty body", path, b"", full))
        cases.append(RestCase(f"ce {path} specversion 2", path, payload, {**full, "ce-specversion": "2.0"}))
        cases.append(RestCase(f"ce {path} body not json", path, b"<xml/>", full))
        structured = {"specversion": "1.0", "id": "s1", "source": "fuzz", "type": "t", "data": json.loads(payload)}
        for key in ("specversion", "id", "source", "type", "data"):
            broken = {k: v for k, v in structured.items() if k != key}
            cases.append(RestCase(f"ce {path} structured without {key}", path, _json(broken),
                                  STRUCTURED))  # fmt: skip
        for value in (None, 1, "", []):
            cases.append(RestCase(f"ce {path} structured id={value!r}", path, _json({**structured, "id": value}),
                                  STRUCTURED))  # fmt: skip
        bad64 = {k: v for k, v in structured.items() if k != "data"} | {"data_base64": "%%%"}
        cases.append(RestCase(f"ce {path} bad base64", path, _json(bad64), STRUCTURED))
        not_json64 = {k: v for k, v in structured.items() if k != "data"} | {
            "data_base64": base64.b64encode(b"{x").decode()
        }
        cases.append(RestCase(f"ce {path} base64 not json", path, _json(not_json64), STRUCTURED))
        cases.append(RestCase(f"ce {path} structured not object", path, b"[1]", STRUCTURED))
    return cases


def _http_cases(rng: random.Random, max_body: int) -> list[RestCase]:
    big = _json({"instances": [_row(rng)] * (max_body // 200 + 10)})
    assert len(big) > max_body
    v2 = _json(_v2_valid(rng))
    return [
        RestCase("oversized v1", "v1", big),
        RestCase("oversized v2", "v2", big),
        RestCase("unknown model v2", "/v2/models/other/infer", v2),
        RestCase("unknown model v1", "/v1/models/other:predict", v2),
        RestCase("unknown version", "/v2/models/test-mlp/versions/99/infer", v2),
        RestCase("explain", "/v1/models/test-mlp:explain", v2),
        RestCase("repository unload", "/v2/repository/models/test-mlp/unload", b""),
        RestCase("repository load", "/v2/repository/models/test-mlp/load", b""),
        RestCase("unknown route", "/v3/predict", v2),
        RestCase("get on infer", "v2", b"", method="GET"),
        RestCase("put on predict", "v1", v2, method="PUT"),
        RestCase("delete on model", "/v2/models/test-mlp", b"", method="DELETE"),
        RestCase("get unknown model", "/v2/models/other", b"", method="GET"),
        RestCase("get unknown model ready", "/v2/models/other/ready", b"", method="GET"),
    ]


def _mutations(rng: random.Random, valid: list[tuple[str, bytes]], n: int) -> list[RestCase]:
    """Seeded random truncations, byte flips and splices of valid bodies."""
    cases = []
    for i in range(n):
        path, body = valid[i % len(valid)]
        data = bytearray(body)
        kind = rng.choice(["truncate", "flip", "splice", "delete"])
        if kind == "truncate":
            data = data[: rng.randrange(len(data))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "splice":
            at = rng.randrange(len(data))
            data[at:at] = rng.choice([b"]", b"[", b"}", b",", b'"', b"null", b"-", b"e99999", b"\\u0000"])
        else:
            at = rng.randrange(len(data))
            del data[at : at + rng.randint(1, 8)]
        cases.append(RestCase(f"mutation {i} {kind}", path, bytes(data)))
    return cases


def _rest_cases(max_body: int) -> list[RestCase]:
    rng = random.Random(SEED)
    valid = [("v1", _json({"instances": [_row(rng)]})), ("v2", _json(_v2_valid(rng)))]
    return [
        *_v1_cases(rng), *_v2_cases(rng), *_binary_cases(rng), *_cloudevent_cases(rng), *_http_cases(rng, max_body),
        *_mutations(rng, valid, 80),
    ]  # fmt: skip


def _grpc_cases() -> list[tuple[str, str, object]]:
    rng = random.Random(SEED + 1)
    tensor = pb.ModelInferRequest.InferInputTensor
    rows = np.asarray([_row(rng) for _ in range(2)], dtype=np.float32)
    raw = rows.tobytes()
    values = rows.ravel().tolist()

    def request(**kwargs) -> pb.ModelInferRequest:
        inputs = kwargs.pop("inputs", None)
        if inputs is None:
            datatype, shape = kwargs.pop("datatype", "FP32"), kwargs.pop("shape", [2, N])
            contents = kwargs.pop("contents", pb.InferTensorContents(fp32_contents=values))
            inputs = [tensor(name="features", datatype=datatype, shape=shape, contents=contents)]
        return pb.ModelInferRequest(model_name=kwargs.pop("model_name", "test-mlp"), inputs=inputs, **kwargs)

    cases: list[tuple[str, str, object]] = [
        ("wrong model", "ModelInfer", request(model_name="other")),
        ("empty model name", "ModelInfer", request(model_name="")),
        ("wrong version", "ModelInfer", request(model_version="7")),
        ("no inputs", "ModelInfer", request(inputs=[])),
        ("two inputs", "ModelInfer", request(inputs=[tensor(name="a"), tensor(name="b")])),
        ("raw and contents", "ModelInfer", request(raw_input_contents=[raw])),
        ("two raw", "ModelInfer", request(contents=pb.InferTensorContents(), raw_input_contents=[raw, raw])),
        ("raw truncated", "ModelInfer", request(contents=pb.InferTensorContents(), raw_input_contents=[raw[:-1]])),
        ("raw padded", "ModelInfer", request(contents=pb.InferTensorContents(), raw_input_contents=[raw + b"\0" * 4])),
        ("raw empty", "ModelInfer", request(contents=pb.InferTensorContents(), raw_input_contents=[b""])),
        ("no values", "ModelInfer", request(contents=pb.InferTensorContents())),
        ("int64 field for FP32", "ModelInfer", request(contents=pb.InferTensorContents(int64_contents=[1] * 60))),
        ("bytes", "ModelInfer", request(datatype="BYTES", contents=pb.InferTensorContents(bytes_contents=[b"a"] * 60))),
        ("bool", "ModelInfer", request(datatype="BOOL", contents=pb.InferTensorContents(bool_contents=[True] * 60))),
        ("FP16 contents", "ModelInfer", request(datatype="FP16")),
        ("nan", "ModelInfer", request(contents=pb.InferTensorContents(fp32_contents=[float("nan")] + values[1:]))),
        ("inf", "ModelInfer", request(contents=pb.InferTensorContents(fp32_contents=[float("inf")] * 60))),
        ("1e300", "ModelInfer", request(datatype="FP64", contents=pb.InferTensorContents(fp64_contents=[1e300] * 60))),
        ("unknown output", "ModelInfer", request(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="x")])),
        ("metadata other", "ModelMetadata", pb.ModelMetadataRequest(name="other")),
        ("metadata version", "ModelMetadata", pb.ModelMetadataRequest(name="test-mlp", version="9")),
        ("ready other", "ModelReady", pb.ModelReadyRequest(name="other")),
        ("unload", "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="test-mlp")),
        ("load", "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="test-mlp")),
    ]  # fmt: skip
    shapes = [[2], [1, N], [3, N], [2, 29], [60], [1, 2, N], [-2, -N], [0, N], [2, -N], [2**40, N], [], [4, 15]]
    datatypes = ["FP32", "FP64", "INT64", "INT32", "UINT8", "BYTES", "BOOL", "", "fp32", "FP8"]
    for i in range(60):  # seeded random combinations of shape, datatype and content field
        shape, datatype = rng.choice(shapes), rng.choice(datatypes)
        field_name = rng.choice(["fp32_contents", "fp64_contents", "int64_contents", "int_contents", "raw"])
        if field_name == "raw":
            req = request(shape=shape, datatype=datatype, contents=pb.InferTensorContents(),
                          raw_input_contents=[raw[: rng.randrange(len(raw) + 1)]])  # fmt: skip
        else:
            count = rng.choice([0, 1, 59, 60, 61])
            numbers = [int(v) for v in values[:count]] if "int" in field_name else values[:count]
            req = request(shape=shape, datatype=datatype, contents=pb.InferTensorContents(**{field_name: numbers}))
        cases.append((f"random {i} {datatype} {shape} {field_name}", "ModelInfer", req))
    return cases


def _check_rest(case: RestCase, response: httpx.Response, problems: list[str]) -> None:
    if response.status_code >= 500:
        problems.append(f"{case.name}: {response.status_code} {response.text[:200]}")
        return
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"{case.name}: {response.status_code} without a JSON error: {response.text[:200]!r}")
            return
        if not isinstance(error, str) or len(error) < 10:
            problems.append(f"{case.name}: {response.status_code} error too thin: {error!r}")


def test_fuzzed_requests_never_break_the_server(live_server):
    endpoint = live_server.endpoint
    rest_cases = _rest_cases(live_server.max_body_bytes)
    grpc_cases = _grpc_cases()
    assert len(rest_cases) + len(grpc_cases) >= 300, (len(rest_cases), len(grpc_cases))
    statuses: Counter = Counter()
    problems: list[str] = []
    urls = {"v1": endpoint.v1_url, "v2": endpoint.v2_url}
    # One keep-alive connection for everything: a reset or dropped connection raises and fails the test.
    with httpx.Client(timeout=30, trust_env=False, limits=httpx.Limits(max_connections=1)) as client:
        for case in rest_cases:
            url = urls.get(case.path) or endpoint.base_url + case.path
            response = client.request(case.method, url, content=case.body, headers=case.headers)
            statuses[response.status_code] += 1
            _check_rest(case, response, problems)
        with grpc.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            for name, method, message in grpc_cases:
                code, details = grpc.StatusCode.OK, ""
                try:
                    getattr(stub, method)(message, timeout=10)
                except grpc.RpcError as e:
                    code, details = e.code(), e.details() or ""
                    if len(details) < 10:
                        problems.append(f"gRPC {name}: {code} without a reason")
                statuses[code.name] += 1
                if code not in ALLOWED_GRPC:
                    problems.append(f"gRPC {name}: {code} {details}")
        assert not problems, "\n".join(problems)
        # Almost every case is refused; the few that are valid by chance were answered.
        assert (
            sum(n for s, n in statuses.items() if s in (400, 404, 405, 403, 413, "INVALID_ARGUMENT", "NOT_FOUND")) > 250
        )
        assert statuses[413] >= 2 and statuses[404] >= 4 and statuses[405] >= 2 and statuses[403] == 2, statuses
        assert client.get(f"{endpoint.base_url}/v2/health/ready").status_code == 200
        assert client.get(f"{endpoint.base_url}/v2/models/test-mlp/ready").status_code == 200
        # and it still scores correctly
        model = live_server.model
        body = {"inputs": [{"name": "features", "shape": list(model.rows.shape), "datatype": "FP32",
                            "data": model.rows.ravel().tolist()}]}  # fmt: skip
        response = client.post(endpoint.v2_url, json=body)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], model.expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("case", "status", "fragment"),
    [
        (RestCase("abc", "v2", b"{}", {"inference-header-content-length": "abc"}), 400, "'abc' is not a byte count"),
        (RestCase("ce", "v1", b'{"instances": []}', {"ce-id": "1", "ce-source": "s"}), 400, "'ce-specversion', 'ce-"),
        (RestCase("ce empty", "v1", b"", {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}),
         400, "empty body"),
        (RestCase("schema", "v2", b'{"inputs": [{"name": "f", "shape": "2", "datatype": "FP32", "data": []}]}'), 400,
         '"shape" must be a list of non-negative integers'),
        (RestCase("no inputs", "v2", b'{"id": "xy"}', {"inference-header-content-length": "12"}), 400, 'no "inputs"'),
        (RestCase("malformed", "v1", b'{"instances": [[1, 2,'), 400, "not valid JSON"),
        (RestCase("405", "v2", b"", method="GET"), 405, "Method Not Allowed"),
    ],
    ids=["header-abc", "ce-missing", "ce-empty-body", "v2-schema", "binary-no-inputs", "malformed-json", "405"],
)  # fmt: skip
def test_named_hardening_cases(live_server, case, status, fragment):
    endpoint = live_server.endpoint
    url = {"v1": endpoint.v1_url, "v2": endpoint.v2_url}[case.path]
    with httpx.Client(timeout=10, trust_env=False) as client:
        response = client.request(case.method, url, content=case.body, headers=case.headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_oversized_body_is_413_and_the_connection_survives(live_server):
    endpoint = live_server.endpoint
    body = b'{"instances": [' + b"[1.0]," * (live_server.max_body_bytes // 6) + b"[1.0]]}"

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    with httpx.Client(timeout=10, trust_env=False, limits=httpx.Limits(max_connections=1)) as client:
        sized = client.post(endpoint.v1_url, content=body)
        streamed = client.post(endpoint.v1_url, content=chunks())  # chunked: no content-length to check up front
        ready = client.get(f"{endpoint.base_url}/v2/health/ready")
    for response in (sized, streamed):
        assert response.status_code == 413, response.text
        assert f"limit of {live_server.max_body_bytes} bytes" in response.json()["error"]
    assert ready.status_code == 200


def test_declared_length_over_the_limit_is_refused_before_the_body(live_server):
    """A client announcing a huge body gets 413 at once, on a connection that stays usable."""
    import socket

    endpoint = live_server.endpoint
    head = (
        f"POST /v2/models/test-mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {live_server.max_body_bytes * 1000}\r\n\r\n"
    ).encode()
    with socket.create_connection((endpoint.host, endpoint.http_port), timeout=10) as sock:
        sock.sendall(head + b'{"inputs": [')  # the rest never comes
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), answer
        headers, _, body = rest.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(body) < length:
            body += sock.recv(4096)
        assert b"over this server's limit" in json.loads(body)["error"].encode()
