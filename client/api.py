"""The REST calls the command line makes: one `httpx.Client` with the service's URL and key, and the service's JSON
errors raised as `ApiError` (HTTP status, machine-readable code, message)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIES = 5  # 503 `overloaded` is retried after its Retry-After, this many times


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class Unreachable(Exception):
    """The service could not be reached (connection refused, DNS, timeout)."""


def _mime(path: Path) -> str:
    return {".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp"}.get(path.suffix.lower(), "image/jpeg")


class AnyFace:
    def __init__(self, url: str = DEFAULT_URL, key: str | None = None, timeout: float = 120.0) -> None:
        headers = {"X-API-Key": key} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one call; `ApiError` for an error answer, `Unreachable` when there is none."""
        for attempt in range(RETRIES + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise Unreachable(f"{self.http.base_url}: {exc}") from exc
            if response.status_code == 503 and attempt < RETRIES and response.headers.get("retry-after"):
                time.sleep(min(float(response.headers["retry-after"]), 10.0))
                continue
            if response.is_success:
                return response.json()
            try:
                error = response.json()["error"]
                raise ApiError(response.status_code, str(error["code"]), str(error["message"]))
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, f"http_{response.status_code}", response.text[:200]) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _files(field: str, photos: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [(field, (name, data, _mime(Path(name)))) for name, data in photos]

    def enroll(self, gallery: str, subject_id: str, photos: list[tuple[str, bytes]], sources: list[str],
               name: str | None = None, metadata: dict[str, Any] | None = None,
               allow_multiple: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"sources": sources}
        if name is not None:
            data["name"] = name
        if metadata is not None:
            data["metadata"] = json.dumps(metadata)
        if allow_multiple:
            data["allow_multiple"] = "true"
        result: dict[str, Any] = self.call("POST", f"/v1/galleries/{gallery}/subjects/{subject_id}/faces",
                                           files=self._files("images", photos), data=data)
        return result

    def identify(self, photo: Path, gallery: str, top_k: int = 5, all_faces: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "POST", "/v1/identify", files=self._files("image", [(photo.name, photo.read_bytes())]),
            data={"gallery": gallery, "top_k": str(top_k), "all_faces": "true" if all_faces else "false"})
        return result

    def verify(self, a: Path, b: Path) -> dict[str, Any]:
        files = [*self._files("image_a", [(a.name, a.read_bytes())]),
                 *self._files("image_b", [(b.name, b.read_bytes())])]
        result: dict[str, Any] = self.call("POST", "/v1/verify", files=files)
        return result

    def verify_subject(self, photo: Path, gallery: str, subject_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/v1/verify", files=self._files("image", [(photo.name,
                                                                                              photo.read_bytes())]),
                                           data={"gallery": gallery, "subject_id": subject_id})
        return result

    def detect(self, photo: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/v1/detect",
                                           files=self._files("image", [(photo.name, photo.read_bytes())]))
        return result

    def galleries(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/galleries")["galleries"])

    def gallery(self, gallery: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/galleries/{gallery}")
        return result

    def delete_gallery(self, gallery: str) -> None:
        self.call("DELETE", f"/v1/galleries/{gallery}")

    def export(self, gallery: str, out: IO[bytes]) -> int:
        """Stream a gallery's export into `out`; the bytes written."""
        written = 0
        try:
            with self.http.stream("GET", f"/v1/galleries/{gallery}/export") as response:
                if not response.is_success:
                    response.read()
                    error = response.json()["error"]
                    raise ApiError(response.status_code, str(error["code"]), str(error["message"]))
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
        except httpx.TransportError as exc:
            raise Unreachable(f"{self.http.base_url}: {exc}") from exc
        return written

    def submit_job(self, gallery: str, archive: Path, allow_multiple: bool = False) -> dict[str, Any]:
        with archive.open("rb") as f:
            result: dict[str, Any] = self.call("POST", f"/v1/galleries/{gallery}/jobs",
                                               files={"archive": (archive.name, f, "application/zip")},
                                               data={"allow_multiple": "true" if allow_multiple else "false"})
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}")
        return result

    def job_results(self, job_id: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = self.call("GET", f"/v1/jobs/{job_id}/results", params={"offset": offset, "limit": 1000})
            results += page["results"]
            offset = page["next_offset"]
        return results

    def import_chunk(self, gallery: str, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/v1/galleries/{gallery}/import",
                                           files={"file": ("gallery.jsonl", data, "application/x-ndjson")})
        return result
