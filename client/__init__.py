"""The AnyFace command-line client (`anyface`): enrolment of folders and manifests, identify, verify, detect and
gallery management over the public REST API."""
