"""AnyFace offline training: the MobileFaceNet trunk, BTNet branches with SCAN convs, distillation, export, evaluation.

Everything here needs PyTorch (`pip install .[train]`); the service never imports this package.
"""
