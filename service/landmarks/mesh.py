"""MediaPipe's face mesh (Apache-2.0): 468 points from a 192 x 192 crop of the face turned upright, of which
the 5 alignment points are made.

The model file is `face_mesh.onnx`, converted from `face_landmark.tflite` by the fetch step (NHWC RGB input,
468 x (x, y, z) in the crop's pixels). Which mesh points make the 5 alignment points was chosen on LFW
pairsDevTrain (docs/landmarks.md): each eye centre is the midpoint of its two corners, the nose tip is point 1,
the mouth corners are points 61 and 291.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.detection import DetectedFace
from service.imaging.roi import Roi, box_roi, eye_angle
from service.landmarks.base import LandmarkModel
from service.models.manifest import ModelEntry
from service.sessions.onnxruntime import create_session

INPUT_SIZE = 192
MESH_POINTS = 468
# Mesh indices of each alignment point, image-left first (the subject's right eye, then left eye, nose tip,
# right then left mouth corner); a point made of several indices is their mean.
EYE_CORNERS: tuple[tuple[int, ...], ...] = ((33, 133), (263, 362), (1,), (61,), (291,))
EYE_CONTOURS: tuple[tuple[int, ...], ...] = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    (1,), (61,), (291,),
)
POINT_SETS = {"eye_corners": EYE_CORNERS, "eye_contours": EYE_CONTOURS}


def five_points(mesh: np.ndarray, point_set: tuple[tuple[int, ...], ...] = EYE_CORNERS) -> np.ndarray:
    """The 5 alignment points (5 x 2) of one face's mesh (468 x 2 or 468 x 3)."""
    return np.array([mesh[list(idx), :2].mean(axis=0) for idx in point_set])


class FaceMeshLandmarks(LandmarkModel):
    """The face mesh on the square around the face box, `scale` times its larger side, turned upright by the
    detector's eye line."""

    name = "mesh"

    def __init__(self, model_path: Path, entry: ModelEntry, threads: int = 0, scale: float = 1.3,
                 point_set: str = "eye_corners") -> None:
        self.session = create_session(model_path, threads)
        self.mean, self.std = entry.mean, entry.std
        self.scale = scale
        self.point_set = POINT_SETS[point_set]

    def roi(self, face: DetectedFace) -> Roi:
        return box_roi(face.box, self.scale, eye_angle(face.landmarks))

    def meshes(self, rgb: np.ndarray, faces: list[DetectedFace]) -> tuple[list[Roi], np.ndarray, np.ndarray]:
        """Each face's square, its mesh in crop pixels (n x 468 x 3) and its face-presence logit (n)."""
        rois = [self.roi(f) for f in faces]
        crops = np.stack([r.crop(rgb, INPUT_SIZE) for r in rois]).astype(np.float32)
        batch = np.ascontiguousarray((crops - self.mean) / self.std)
        mesh, presence = self.session.run(["landmarks", "presence"], {"image": batch})
        return rois, mesh.reshape(len(faces), MESH_POINTS, 3), presence.reshape(len(faces))

    def points(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        if not faces:
            return np.zeros((0, 5, 2))
        rois, mesh, _ = self.meshes(rgb, faces)
        return np.stack([r.to_image(five_points(m, self.point_set), INPUT_SIZE)
                         for r, m in zip(rois, mesh, strict=True)])
