"""Client-facing errors: every refusal carries a stable machine-readable code and an HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """An error the client caused or must know about; rendered as `{"error": {"code", "message"}}`."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidImage(ServiceError):
    status, code = 422, "invalid_image"


class EmptyImage(ServiceError):
    status, code = 422, "empty_image"


class ImageTooLarge(ServiceError):
    status, code = 413, "image_too_large"


class ImageTooManyPixels(ServiceError):
    status, code = 413, "image_too_many_pixels"


class ImageTooSmall(ServiceError):
    status, code = 422, "image_too_small"


class NoFace(ServiceError):
    status, code = 422, "no_face"


class MultipleFaces(ServiceError):
    status, code = 422, "multiple_faces"


class GalleryNotFound(ServiceError):
    status, code = 404, "gallery_not_found"


class SubjectNotFound(ServiceError):
    status, code = 404, "subject_not_found"


class FaceNotFound(ServiceError):
    status, code = 404, "face_not_found"


class InvalidParameter(ServiceError):
    status, code = 422, "invalid_parameter"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class BackendUnavailable(ServiceError):
    """A dependency (store, Triton) is down; the client may retry."""

    status, code = 503, "backend_unavailable"
