"""AnyFace: face detection, verification and identification served over REST."""

__version__ = "0.1.0"
