"""The one evaluation package of AnyFace: used by `make bench` (`bench/`), `python -m training.evaluate` and every
later embedder.

- `evaluation.lfw`: where LFW is, its image names, the pairs files (with their folds) and the people files.
- `evaluation.verification`: pair scores, the best-accuracy threshold (one tie rule), k-fold accuracy, ROC,
  TAR@FAR, the threshold at a FAR, AUC.
- `evaluation.identification`: open-set identification (rank-1, TPIR@FPIR).
- `evaluation.embed`: embeddings of LFW photos through the service's own face path, cached on disk.
- `evaluation.plots`: the ROC plots.

Nothing here imports PyTorch; `evaluation.embed` needs the service extras (ONNX Runtime, OpenCV).
"""
