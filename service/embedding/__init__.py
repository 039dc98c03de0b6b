"""Face embedders: runtimes (ONNX Runtime, Triton), resolution routing and the micro-batcher."""
