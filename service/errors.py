"""Domain errors: every refusal carries a stable machine-readable code and a message naming what was wrong.

They say nothing about HTTP: `service/api/errors.py` maps each to its status code, in one place.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error the caller caused or must know about; the API renders it as `{"error": {"code", "message"}}`."""

    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidImage(ServiceError):
    code = "invalid_image"


class EmptyImage(ServiceError):
    code = "empty_image"


class ImageTooLarge(ServiceError):
    code = "image_too_large"


class ImageTooManyPixels(ServiceError):
    code = "image_too_many_pixels"


class ImageTooSmall(ServiceError):
    code = "image_too_small"


class NoFace(ServiceError):
    code = "no_face"


class MultipleFaces(ServiceError):
    code = "multiple_faces"


class LowQuality(ServiceError):
    """A face whose quality (`core/quality.py`) is below the `min_quality` in force: not enrolled, not searched."""

    code = "low_quality"


class GalleryNotFound(ServiceError):
    code = "gallery_not_found"


class SubjectNotFound(ServiceError):
    code = "subject_not_found"


class FaceNotFound(ServiceError):
    code = "face_not_found"


class JobNotFound(ServiceError):
    code = "job_not_found"


class ThumbnailNotFound(ServiceError):
    code = "thumbnail_not_found"


class EmbedderMismatch(ServiceError):
    """The gallery was filled by another embedder than the one this service runs: its embeddings are not
    comparable with this service's."""

    code = "embedder_mismatch"


class InvalidParameter(ServiceError):
    code = "invalid_parameter"


class Unauthorized(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


class BackendUnavailable(ServiceError):
    """A dependency (store, Triton) is down; the caller may retry."""

    code = "backend_unavailable"


class InvalidMetadata(InvalidParameter):
    """A subject's metadata breaks the metadata rule (`core/metadata.py`): not a JSON object, too deep, too large,
    or holding a value JSON cannot carry."""

    code = "invalid_metadata"


class UnsupportedImage(ServiceError):
    """A decodable image in a form the service cannot turn into RGB (e.g. an unknown colour mode)."""

    code = "unsupported_image"


class DecodeOverloaded(ServiceError):
    """The decodes in flight hold the whole decode memory budget and it did not free up in time: retry later."""

    code = "overloaded"
