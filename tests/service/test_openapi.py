"""The OpenAPI schema (issue "Hardening", finding 3): every status the API answers, with the JSON error body; the
limits that are settings; the /metrics content type; and the Allow header of 405 answers. No models needed."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.app import create_app
from service.settings import Settings

KEY = "admin-key-1234"
ERROR_REF = "#/components/schemas/ErrorBody"
UPLOAD = {"400", "401", "403", "404", "409", "413", "415", "422", "503"}
READ = {"401", "403", "404", "422", "503"}

# (method, path) -> the error statuses it answers
EXPECTED = {
    ("post", "/v1/detect"): {"400", "401", "413", "415", "422", "503"},
    ("post", "/v1/verify"): UPLOAD,
    ("post", "/v1/identify"): UPLOAD,
    ("post", "/v1/galleries/{gallery}/subjects/{subject_id}/faces"): UPLOAD,
    ("get", "/v1/galleries"): {"401", "503"},
    ("get", "/v1/galleries/{gallery}"): READ,
    ("delete", "/v1/galleries/{gallery}"): READ,
    ("get", "/v1/galleries/{gallery}/subjects"): READ,
    ("get", "/v1/galleries/{gallery}/subjects/{subject_id}"): READ,
    ("patch", "/v1/galleries/{gallery}/subjects/{subject_id}"): {"400", "401", "403", "404", "413", "422", "503"},
    ("delete", "/v1/galleries/{gallery}/subjects/{subject_id}"): READ,
    ("delete", "/v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}"): READ,
    ("get", "/v1/me"): {"401", "503"},
    ("post", "/v1/galleries/{gallery}/jobs"): {"400", "401", "403", "409", "413", "422", "503"},
    ("get", "/v1/jobs/{job_id}"): READ,
    ("get", "/v1/jobs/{job_id}/results"): READ,
    ("post", "/v1/verify/batch"): {"400", "401", "403", "413", "415", "422", "503"},
    ("put", "/v1/galleries/{gallery}"): {"401", "403", "422", "503"},
    ("get", "/v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}/thumbnail"): READ,
    ("get", "/v1/galleries/{gallery}/export"): READ,
    ("post", "/v1/galleries/{gallery}/import"): {"400", "401", "403", "409", "413", "422", "503"},
    ("get", "/metrics"): {"401", "403"},
    ("get", "/readyz"): {"503"},
    ("get", "/healthz"): set(),
}


# operations with two success answers; every other one has a single one
SUCCESS = {
    ("put", "/v1/galleries/{gallery}"): {"200", "201"},  # it existed / it was created
    ("post", "/v1/galleries/{gallery}/subjects/{subject_id}/faces"): {"200", "201"},  # all duplicates / added
}


def schema_of(**settings: Any) -> dict[str, Any]:
    return create_app(Settings(**settings)).openapi()


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return schema_of(api_keys=KEY)


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}


def test_every_operation_declares_the_statuses_it_answers(spec: dict[str, Any]) -> None:
    ops = operations(spec)
    assert set(ops) == set(EXPECTED)
    for key, op in ops.items():
        declared = {status for status in op["responses"] if int(status) >= 400}
        assert declared == EXPECTED[key], key
        success = {status for status in op["responses"] if int(status) < 300}
        assert success == SUCCESS.get(key, success) and len(success) == len(SUCCESS.get(key, "1")), key


def test_errors_are_declared_with_the_json_error_body(spec: dict[str, Any]) -> None:
    for key, op in operations(spec).items():
        for status, response in op["responses"].items():
            if int(status) < 400 or key == ("get", "/readyz"):
                continue
            assert response["content"] == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (key, status)
            assert response["description"]
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body is never what we answer
    body = schemas["ErrorBody"]
    assert body["required"] == ["error"]
    detail = schemas[body["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["required"]) == {"code", "message"}
    retry = operations(spec)[("post", "/v1/identify")]["responses"]["503"]["headers"]
    assert "Retry-After" in retry


def test_method_not_allowed_is_documented_with_allow(spec: dict[str, Any]) -> None:
    response = spec["components"]["responses"]["MethodNotAllowed"]
    assert "Allow" in response["headers"]
    assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF


def test_limits_come_from_the_settings() -> None:
    for page, top_k, images in ((123, 45, 3), (500, 100, 16)):
        spec = schema_of(page_size_max=page, max_top_k=top_k, max_images_per_request=images)
        ops = operations(spec)
        (limit,) = [p for p in ops[("get", "/v1/galleries/{gallery}/subjects")]["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["maximum"] == page
        schemas = spec["components"]["schemas"]

        def body(key: tuple[str, str], ops: dict = ops, schemas: dict = schemas) -> dict[str, Any]:
            ref = ops[key]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
            return schemas[ref.rsplit("/", 1)[1]]["properties"]

        assert body(("post", "/v1/identify"))["top_k"]["maximum"] == top_k
        arrays = [s for s in body(("post", "/v1/galleries/{gallery}/subjects/{subject_id}/faces"))["images"]["anyOf"]
                  if s.get("type") == "array"]
        assert [s["maxItems"] for s in arrays] == [images]


def test_metrics_content_type_is_declared_and_served() -> None:
    spec = schema_of(api_keys=[])
    ok = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(ok["content"]) == [CONTENT_TYPE_LATEST]
    assert CONTENT_TYPE_LATEST.startswith("text/plain; version=")
    served = TestClient(create_app(Settings(api_keys=[]))).get("/metrics")
    assert served.headers["content-type"] == CONTENT_TYPE_LATEST


def test_api_keys_are_declared(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["components"]["securitySchemes"]["Bearer"]["scheme"] == "bearer"
    ops = operations(spec)
    for (method, path), op in ops.items():
        if path.startswith("/v1/") or path == "/metrics":
            assert op["security"] == [{"ApiKey": []}, {"Bearer": []}], (method, path)
        else:
            assert "security" not in op, path
    open_ops = operations(schema_of(api_keys=[]))
    assert open_ops[("get", "/v1/galleries")]["security"][-1] == {}  # without keys, none is needed


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/v1/galleries/g", "GET, PUT, DELETE"),
    ("POST", "/v1/galleries/g/subjects/s", "GET, PATCH, DELETE"),
    ("GET", "/v1/detect", "POST"),
    ("POST", "/healthz", "GET"),
    ("HEAD", "/metrics", "GET"),
])
def test_405_answers_carry_allow(method: str, path: str, allow: str) -> None:
    client = TestClient(create_app(Settings(api_keys=KEY)))
    response = client.request(method, path, headers={"X-API-Key": KEY})
    assert response.status_code == 405
    if method != "HEAD":
        assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == allow
    if path.startswith("/v1/"):  # without a key, a /v1 call learns nothing, not even its methods
        assert client.request(method, path).status_code == 401


def test_docs_and_schema_are_public_with_keys() -> None:
    client = TestClient(create_app(Settings(api_keys=KEY)))
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_schema_loads_in_schemathesis(spec: dict[str, Any]) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    loaded = schemathesis.openapi.from_dict(spec)
    assert len([op.ok() for op in loaded.get_all_operations()]) == len(EXPECTED)
