"""Inference sessions: the one place AnyFace talks to a model runtime.

A session is a loaded model (or a connection to models served elsewhere) that turns float32 input tensors into
output tensors, and nothing more: which runtime and device run it, its threads, connections, timeouts and
readiness. What the tensors mean (normalisation, face crops, detections, embeddings) belongs to the callers:
detection, embedding and training's export checks.

- `service.sessions.onnxruntime`: an in-process ONNX Runtime `InferenceSession` (CUDA when available, else CPU).
- `service.sessions.triton`: the client side of a Triton Inference Server (gRPC or HTTP); Triton being down is an
  expected state that surfaces as `service.errors.BackendUnavailable`.
"""
