"""The ChArUco calibration board: definition, image (to print, or as the simulator's texture),
detection and pose.

Board frame (OpenCV's): origin at the outer corner of the first square (the image's top-left),
x along the `squares_x` columns, y along the `squares_y` rows (down the image), z into the board,
so a camera looking at the printed side sees the board's z axis pointing away from it.
Corner ids count the inner chessboard corners row by row (`(squares_x-1) * (squares_y-1)` of them).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_CORNERS = 6   # fewer corners give no stable pose (and OpenCV's solvers reject < 4 / collinear sets)


@dataclass(frozen=True)
class CharucoBoardSpec:
    """A ChArUco board: `squares_x` x `squares_y` squares of `square_length` metres, ArUco markers of
    `marker_length` metres from `dictionary` (an OpenCV `DICT_*` name) in the white squares."""

    squares_x: int = 5
    squares_y: int = 7
    square_length: float = 0.04
    marker_length: float = 0.03
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise ValueError(f"a ChArUco board needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_length < self.square_length:
            raise ValueError(f"marker_length must be in (0, square_length={self.square_length}) m, "
                             f"got {self.marker_length}")
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)")
        needed = self.squares_x * self.squares_y // 2
        available = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]
        if needed > available:
            raise ValueError(f"a {self.squares_x}x{self.squares_y} board needs {needed} markers but "
                             f"{self.dictionary} has {available}")

    @property
    def size(self) -> tuple[float, float]:
        """(width, height) of the board in metres."""
        return self.squares_x * self.square_length, self.squares_y * self.square_length

    @property
    def num_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def opencv(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_length, self.marker_length,
                                      dictionary)

    def corner_points(self) -> np.ndarray:
        """(num_corners, 3) float64 board-frame positions of the inner corners, indexed by id."""
        return np.asarray(self.opencv().getChessboardCorners(), np.float64).reshape(-1, 3)

    def image(self, pixels_per_square: int = 100) -> np.ndarray:
        """(H, W) uint8 image of exactly the board (no margin): print it at `size`, or texture a plate."""
        if pixels_per_square < 20:
            raise ValueError(f"pixels_per_square must be >= 20 for decodable markers, got {pixels_per_square}")
        width, height = self.squares_x * pixels_per_square, self.squares_y * pixels_per_square
        return self.opencv().generateImage((width, height), marginSize=0)

    def detect(self, image: np.ndarray, min_corners: int = MIN_CORNERS) -> BoardDetection | None:
        """Corners of the board in an (H, W) gray or (H, W, 3) RGB uint8 image; None when fewer than
        `min_corners` are found (board absent, too small, blurred or cut off)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _, _ = cv2.aruco.CharucoDetector(self.opencv()).detectBoard(gray)
        if ids is None or len(ids) < min_corners:
            return None
        ids = ids.reshape(-1).astype(np.int64)
        return BoardDetection(ids=ids, image_points=corners.reshape(-1, 2).astype(np.float64),
                              object_points=self.corner_points()[ids],
                              image_size=(gray.shape[1], gray.shape[0]))


@dataclass(frozen=True)
class BoardDetection:
    """The board corners found in one image: ids (N,), image_points (N, 2) pixels (OpenCV, pixel
    centres at integers), object_points (N, 3) board frame metres; image_size (width, height)."""

    ids: np.ndarray
    image_points: np.ndarray
    object_points: np.ndarray
    image_size: tuple[int, int]

    def pose(self, K: np.ndarray, distortion: np.ndarray = np.zeros(5)) -> tuple[np.ndarray, float]:
        """T_cam_board (4, 4) by PnP, and its reprojection RMS in pixels."""
        ok, rvec, tvec = cv2.solvePnP(self.object_points, self.image_points, np.asarray(K, np.float64),
                                      np.asarray(distortion, np.float64), flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            raise ValueError(f"PnP failed on a detection of {len(self.ids)} corners")
        rvec, tvec = cv2.solvePnPRefineLM(self.object_points, self.image_points, np.asarray(K, np.float64),
                                          np.asarray(distortion, np.float64), rvec, tvec)
        projected, _ = cv2.projectPoints(self.object_points, rvec, tvec, np.asarray(K, np.float64),
                                         np.asarray(distortion, np.float64))
        rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - self.image_points) ** 2, axis=1))))
        return pose_matrix(rvec, tvec), rms


def pose_matrix(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform from an OpenCV rotation vector and translation."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3))[0]
    T[:3, 3] = np.asarray(tvec, np.float64).reshape(3)
    return T
