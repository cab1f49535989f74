"""Pseudo-labels for the instance module (METHOD.md §2.8): no manual annotation.

Per observation and instance t: per-view 2D boxes and masks, visibility, and a 3D centroid =
the median of the mask's unprojected valid depth points (base frame). Every source sits behind
one interface, `PseudoLabeler.label(obs, segmentation=None) -> InstanceLabels`:

- `SegmentationLabeler`: simulator instance segmentation, standing in for a perception model.
- `DepthClusterLabeler` **(ours)**: label-free, for real recordings. All views' depth is fused
  into one base-frame cloud, voxel-downsampled; the table is the dominant near-horizontal plane
  (RANSAC, open3d `segment_plane`); objects are DBSCAN clusters (open3d `cluster_dbscan`) of
  the points above it. Each cluster is then labelled in every view by a per-pixel z-buffer
  test: a pixel belongs to cluster k when the surface that view actually sees there lies on k
  (within `assign_radius`), so parts of k hidden behind another object are never labelled; pixels
  without valid depth (sensor holes) get the cluster whose projected points land on them.
- `DetectorLabeler`: any detector/segmenter a user has. It returns unassociated per-view masks;
  the adapter associates them across views by their 3D centroids.

Conventions: boxes are (cx, cy, w, h) normalised by the image width/height, with pixel (u, v)
covering [u, u+1) x [v, v+1) / (W, H), i.e. pixel centres at (u + 0.5) / W.

`evaluate_labels` measures one labeller against a reference (centroid error, mask IoU, instance
recall/precision); `docs/pseudo_labels.md` holds the table for the depth labeller vs. the sim.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from vla3d_ros.geometry import project_points, unproject_depth
from vla3d_ros.types import Observation


@dataclass
class InstanceLabels:
    """Pseudo-labels of one observation: T instances, V views, H x W pixels."""

    boxes: np.ndarray        # (T, V, 4) float32 cx, cy, w, h in [0, 1]; zeros where not visible
    box_valid: np.ndarray    # (T, V) bool, instance t visible in view v
    masks: np.ndarray        # (T, V, H, W) bool
    centroids: np.ndarray    # (T, 3) float32 base frame, metres
    instance_ids: np.ndarray = field(default=None)  # (T,) int64 source ids (sim ids, cluster ranks)

    def __post_init__(self) -> None:
        if self.masks.ndim != 4:
            raise ValueError(f"masks must be (T, V, H, W), got shape {self.masks.shape}")
        num_instances, num_views = self.masks.shape[:2]
        if self.instance_ids is None:
            self.instance_ids = np.arange(num_instances, dtype=np.int64)
        expected = {
            "boxes": (num_instances, num_views, 4),
            "box_valid": (num_instances, num_views),
            "centroids": (num_instances, 3),
            "instance_ids": (num_instances,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} must be {shape}, got {getattr(self, name).shape}")

    @property
    def num_instances(self) -> int:
        return self.masks.shape[0]

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray,
        points: np.ndarray,
        point_valid: np.ndarray,
        instance_ids: np.ndarray | None = None,
        min_mask_pixels: int = 1,
    ) -> InstanceLabels:
        """Boxes, visibility and median-depth centroids of per-view instance masks (§2.8).

        Instances whose masks hold no valid depth point anywhere have no centroid and are
        dropped, so every returned instance is fully labelled.

        Args:
            masks: (T, V, H, W) bool.
            points: (V, H, W, 3) base-frame point maps of the views (`observation_point_maps`).
            point_valid: (V, H, W) bool.
            instance_ids: (T,) ids to carry along; default 0..T-1.
            min_mask_pixels: a view counts as seeing the instance from this many mask pixels on.
        """
        masks = np.asarray(masks, dtype=bool)
        if masks.shape[1:] != point_valid.shape:
            raise ValueError(
                f"masks {masks.shape} do not match the point maps' (V, H, W) {point_valid.shape}"
            )
        if instance_ids is None:
            instance_ids = np.arange(masks.shape[0], dtype=np.int64)
        visible = masks.sum(axis=(2, 3)) >= min_mask_pixels                  # (T, V)
        masks = masks & visible[:, :, None, None]
        centroids = np.full((masks.shape[0], 3), np.nan, np.float32)
        for t, instance_masks in enumerate(masks):
            selected = instance_masks & point_valid                          # (V, H, W)
            if selected.any():
                centroids[t] = np.median(points[selected], axis=0)
        keep = np.isfinite(centroids[:, 0])
        boxes, _ = masks_to_boxes(masks[keep])
        return cls(
            boxes=boxes,
            box_valid=visible[keep],
            masks=masks[keep],
            centroids=centroids[keep],
            instance_ids=np.asarray(instance_ids, dtype=np.int64)[keep],
        )


class PseudoLabeler(Protocol):
    """A source of pseudo-labels: sim segmentation, depth clustering, a user's detector."""

    def label(self, obs: Observation, segmentation: np.ndarray | None = None) -> InstanceLabels:
        """Labels of `obs`; `segmentation` (V, H, W) int instance ids when the source needs it."""
        ...


def masks_to_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight normalised boxes of boolean masks.

    Args:
        masks: (..., H, W) bool.
    Returns:
        boxes (..., 4) float32 cx, cy, w, h in [0, 1] (zeros for empty masks) and
        nonempty (...,) bool.
    """
    height, width = masks.shape[-2:]
    rows = masks.any(axis=-1)                                                # (..., H)
    cols = masks.any(axis=-2)                                                # (..., W)
    nonempty = rows.any(axis=-1)
    top = np.argmax(rows, axis=-1)
    bottom = height - np.argmax(rows[..., ::-1], axis=-1)                    # exclusive
    left = np.argmax(cols, axis=-1)
    right = width - np.argmax(cols[..., ::-1], axis=-1)
    boxes = np.stack(
        [(left + right) / (2 * width), (top + bottom) / (2 * height),
         (right - left) / width, (bottom - top) / height],
        axis=-1,
    ).astype(np.float32)
    boxes[~nonempty] = 0.0
    return boxes, nonempty


def observation_point_maps(obs: Observation) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame point maps of every view: points (V, H, W, 3) float32, valid (V, H, W) bool."""
    if obs.depth is None:
        raise ValueError("pseudo-labels need depth: this observation is RGB-only (depth=None)")
    maps = [unproject_depth(obs.depth[v], obs.intrinsics[v], obs.T_base_cam[v])
            for v in range(obs.num_views)]
    return np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])


def _check_segmentation(obs: Observation, segmentation: np.ndarray | None) -> np.ndarray:
    if segmentation is None:
        raise ValueError("this labeller needs the (V, H, W) instance segmentation, got None")
    segmentation = np.asarray(segmentation)
    expected = (obs.num_views, *obs.rgb.shape[1:3])
    if segmentation.shape != expected:
        raise ValueError(f"segmentation must be {expected}, got {segmentation.shape}")
    return segmentation


# ---- (a) simulator segmentation ------------------------------------------------------------

@dataclass
class SegmentationLabeler:
    """Pseudo-labels from instance segmentation (ids > 0 are objects, 0 is everything else).

    `object_ids` fixes which ids are instances and in which order (e.g. the env's
    `object_ids().values()`), so instance t means the same object throughout an episode;
    default: every nonzero id present, ascending.
    """

    object_ids: Sequence[int] | None = None
    min_mask_pixels: int = 1

    def __post_init__(self) -> None:
        if self.min_mask_pixels < 1:
            raise ValueError(f"min_mask_pixels must be >= 1, got {self.min_mask_pixels}")
        if self.object_ids is not None and any(int(i) <= 0 for i in self.object_ids):
            raise ValueError(f"object ids must be > 0 (0 is background), got {list(self.object_ids)}")

    def label(self, obs: Observation, segmentation: np.ndarray | None = None) -> InstanceLabels:
        segmentation = _check_segmentation(obs, segmentation)
        ids = (np.asarray(self.object_ids, dtype=np.int64) if self.object_ids is not None
               else np.unique(segmentation[segmentation > 0]).astype(np.int64))
        points, valid = observation_point_maps(obs)
        masks = segmentation[None] == ids[:, None, None, None]              # (T, V, H, W)
        return InstanceLabels.from_masks(masks, points, valid, ids, self.min_mask_pixels)


# ---- (b) label-free depth clustering ---------------------------------------------------------

@dataclass
class DepthClusterConfig:
    """Parameters of `DepthClusterLabeler` (metres unless stated)."""

    voxel_size: float = 0.005
    # Optional base-frame crop (x, y, z) applied before anything else: keeps walls, the floor
    # and the robot's base out of the plane fit and the clusters.
    workspace_low: tuple[float, float, float] | None = None
    workspace_high: tuple[float, float, float] | None = None
    plane_distance: float = 0.006          # RANSAC inlier distance to the table plane
    plane_iterations: int = 300
    max_plane_tilt_deg: float = 20.0       # the table's normal must be this close to base +z
    min_height: float = 0.008              # object points lie this far above the plane ...
    max_height: float = 0.30               # ... and no farther (drops an arm reaching down)
    dbscan_eps: float = 0.015
    dbscan_min_points: int = 6
    min_cluster_points: int = 25           # smaller clusters are noise, not objects
    # Objects rest on the table: a cluster whose lowest point is higher than this above the
    # plane (a hovering arm or gripper) is not an object. None disables the test.
    max_support_gap: float | None = 0.03
    assign_radius: float = 0.012           # pixel-to-cluster distance in the z-buffer test
    min_mask_pixels: int = 4
    seed: int = 0                          # RANSAC is randomised; fixed for reproducible labels

    def __post_init__(self) -> None:
        positive = ("voxel_size", "plane_distance", "dbscan_eps", "assign_radius", "max_height")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("plane_iterations", "dbscan_min_points", "min_cluster_points", "min_mask_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_height < self.max_height:
            raise ValueError(
                f"need 0 <= min_height < max_height, got {self.min_height}, {self.max_height}"
            )
        if not 0 < self.max_plane_tilt_deg < 90:
            raise ValueError(f"max_plane_tilt_deg must be in (0, 90), got {self.max_plane_tilt_deg}")
        if self.max_support_gap is not None and self.max_support_gap < 0:
            raise ValueError(f"max_support_gap must be >= 0 or None, got {self.max_support_gap}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError(
                f"give both workspace bounds or neither, got low={self.workspace_low}, "
                f"high={self.workspace_high}"
            )
        if self.workspace_low is not None and not np.all(
            np.asarray(self.workspace_low) < np.asarray(self.workspace_high)
        ):
            raise ValueError(
                f"workspace_low {self.workspace_low} must be < workspace_high {self.workspace_high}"
            )


class DepthClusterLabeler:
    """Label-free pseudo-labels: RANSAC table plane + DBSCAN object clusters (module docstring)."""

    def __init__(self, config: DepthClusterConfig | None = None) -> None:
        self.config = config or DepthClusterConfig()

    def label(self, obs: Observation, segmentation: np.ndarray | None = None) -> InstanceLabels:
        """`segmentation` is ignored: this labeller needs nothing but calibrated depth."""
        points, valid = observation_point_maps(obs)                          # (V, H, W, 3)
        clusters = self.clusters(points[valid])
        masks = self._masks(obs, points, valid, clusters)
        return InstanceLabels.from_masks(masks, points, valid, None, self.config.min_mask_pixels)

    def clusters(self, cloud: np.ndarray) -> list[np.ndarray]:
        """Object clusters of a base-frame cloud (N, 3): a list of (N_k, 3), largest first."""
        import open3d as o3d

        cfg = self.config
        if cfg.workspace_low is not None:
            inside = np.all((cloud >= cfg.workspace_low) & (cloud <= cfg.workspace_high), axis=1)
            cloud = cloud[inside]
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.astype(np.float64)))
        pcd = pcd.voxel_down_sample(cfg.voxel_size)
        down = np.asarray(pcd.points)
        if len(down) < 3:
            return []
        o3d.utility.random.seed(cfg.seed)
        plane, _ = pcd.segment_plane(cfg.plane_distance, 3, cfg.plane_iterations)
        normal, offset = np.asarray(plane[:3]), float(plane[3])
        scale = np.linalg.norm(normal)
        normal, offset = normal / scale, offset / scale
        if normal[2] < 0:                                 # orient the normal upwards
            normal, offset = -normal, -offset
        tilt = np.degrees(np.arccos(np.clip(normal[2], -1.0, 1.0)))
        if tilt > cfg.max_plane_tilt_deg:
            # No table in view (or a wall dominates): label nothing rather than label garbage.
            return []
        height = down @ normal + offset
        above = (height > cfg.min_height) & (height < cfg.max_height)
        if above.sum() < cfg.min_cluster_points:
            return []
        candidates = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(down[above]))
        labels = np.asarray(candidates.cluster_dbscan(cfg.dbscan_eps, cfg.dbscan_min_points))
        kept = []
        for k in range(labels.max() + 1):
            member = labels == k
            if member.sum() < cfg.min_cluster_points:
                continue
            if cfg.max_support_gap is not None and height[above][member].min() > cfg.max_support_gap:
                continue
            kept.append(down[above][member])
        return sorted(kept, key=len, reverse=True)

    def _masks(
        self, obs: Observation, points: np.ndarray, valid: np.ndarray, clusters: list[np.ndarray]
    ) -> np.ndarray:
        """(K, V, H, W) masks of the clusters by the per-pixel z-buffer test (module docstring)."""
        num_views, height, width = valid.shape
        masks = np.zeros((len(clusters), num_views, height, width), bool)
        if not clusters:
            return masks
        cluster_points = np.concatenate(clusters)
        cluster_index = np.repeat(np.arange(len(clusters)), [len(c) for c in clusters])
        tree = cKDTree(cluster_points)
        for v in range(num_views):
            # Pixels with depth: the surface this view sees must belong to the cluster.
            distance, nearest = tree.query(points[v][valid[v]], distance_upper_bound=self.config.assign_radius)
            hit = np.isfinite(distance)
            rows, cols = np.nonzero(valid[v])
            masks[cluster_index[nearest[hit]], v, rows[hit], cols[hit]] = True
            # Pixels without depth: nothing occludes as far as we know; label by projection.
            uv, _, in_front = project_points(cluster_points, obs.intrinsics[v], obs.T_base_cam[v])
            pixel = np.floor(uv + 0.5).astype(np.int64)
            inside = (in_front & (pixel[:, 0] >= 0) & (pixel[:, 0] < width)
                      & (pixel[:, 1] >= 0) & (pixel[:, 1] < height))
            pixel, owner = pixel[inside], cluster_index[inside]
            hole = ~valid[v][pixel[:, 1], pixel[:, 0]]
            masks[owner[hole], v, pixel[hole, 1], pixel[hole, 0]] = True
        return masks


# ---- a user's detector / segmenter ---------------------------------------------------------

PerViewMaskDetector = Callable[[Observation], Sequence[np.ndarray]]


@dataclass
class DetectorLabeler:
    """Adapter for any 2D detector/segmenter: `detector(obs)` returns, per view v, an
    (N_v, H, W) bool array of instance masks in that view, in any order and NOT associated
    across views (what off-the-shelf segmenters give).

    Association across views is done in 3D: each per-view mask gets the median of its valid
    depth points; masks from different views whose centroids lie within `association_radius`
    are the same instance (greedy, closest pairs first, at most one mask per view per instance).
    """

    detector: PerViewMaskDetector
    association_radius: float = 0.04
    min_mask_pixels: int = 1

    def __post_init__(self) -> None:
        if not callable(self.detector):
            raise ValueError(f"detector must be callable, got {self.detector!r}")
        if not self.association_radius > 0:
            raise ValueError(f"association_radius must be > 0, got {self.association_radius}")

    def label(self, obs: Observation, segmentation: np.ndarray | None = None) -> InstanceLabels:
        points, valid = observation_point_maps(obs)
        num_views, height, width = valid.shape
        per_view = list(self.detector(obs))
        if len(per_view) != num_views:
            raise ValueError(f"detector returned masks for {len(per_view)} views, expected {num_views}")
        view_of, masks_flat, centres = [], [], []
        for v, view_masks in enumerate(per_view):
            view_masks = np.asarray(view_masks, dtype=bool)
            if view_masks.ndim != 3 or view_masks.shape[1:] != (height, width):
                raise ValueError(
                    f"detector masks for view {v} must be (N, {height}, {width}), got {view_masks.shape}"
                )
            for mask in view_masks:
                selected = mask & valid[v]
                if mask.sum() >= self.min_mask_pixels and selected.any():
                    view_of.append(v)
                    masks_flat.append(mask)
                    centres.append(np.median(points[v][selected], axis=0))
        groups = self._associate(np.asarray(view_of), np.asarray(centres).reshape(-1, 3))
        masks = np.zeros((len(groups), num_views, height, width), bool)
        for t, members in enumerate(groups):
            for m in members:
                masks[t, view_of[m]] = masks_flat[m]
        return InstanceLabels.from_masks(masks, points, valid, None, self.min_mask_pixels)

    def _associate(self, view_of: np.ndarray, centres: np.ndarray) -> list[list[int]]:
        """Greedy merge of per-view detections into instances, closest centroid pairs first."""
        group_of = list(range(len(centres)))
        members: dict[int, list[int]] = {i: [i] for i in range(len(centres))}
        if len(centres) > 1:
            distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
            pairs = np.argwhere(np.triu(distance <= self.association_radius, k=1))
            for i, j in sorted(pairs.tolist(), key=lambda p: distance[p[0], p[1]]):
                gi, gj = group_of[i], group_of[j]
                if gi == gj or set(view_of[members[gi]]) & set(view_of[members[gj]]):
                    continue                           # one mask per view per instance
                members[gi].extend(members.pop(gj))
                for m in members[gi]:
                    group_of[m] = gi
        return [sorted(g) for g in sorted(members.values(), key=min)]


# ---- evaluation ------------------------------------------------------------------------------

@dataclass
class LabelMatch:
    """How one labelling of one observation compares to a reference labelling."""

    num_predicted: int
    num_reference: int
    num_matched: int
    centroid_errors: np.ndarray   # (M,) metres, per matched instance
    mask_ious: np.ndarray         # (K,) per matched instance and view where either mask is nonempty


def match_labels(
    predicted: InstanceLabels, reference: InstanceLabels, match_radius: float = 0.05
) -> LabelMatch:
    """One-to-one match by centroid distance (Hungarian), pairs farther than `match_radius` unmatched."""
    if predicted.masks.shape[1:] != reference.masks.shape[1:]:
        raise ValueError(
            f"labellings disagree on (V, H, W): {predicted.masks.shape[1:]} vs {reference.masks.shape[1:]}"
        )
    empty = LabelMatch(predicted.num_instances, reference.num_instances, 0, np.zeros(0), np.zeros(0))
    if predicted.num_instances == 0 or reference.num_instances == 0:
        return empty
    distance = np.linalg.norm(
        predicted.centroids[:, None].astype(np.float64) - reference.centroids[None], axis=-1
    )
    rows, cols = linear_sum_assignment(distance)
    close = distance[rows, cols] <= match_radius
    rows, cols = rows[close], cols[close]
    pred_masks, ref_masks = predicted.masks[rows], reference.masks[cols]      # (M, V, H, W)
    intersection = (pred_masks & ref_masks).sum(axis=(2, 3))
    union = (pred_masks | ref_masks).sum(axis=(2, 3))
    return LabelMatch(
        num_predicted=predicted.num_instances,
        num_reference=reference.num_instances,
        num_matched=len(rows),
        centroid_errors=distance[rows, cols],
        mask_ious=intersection[union > 0] / union[union > 0],
    )


@dataclass
class LabelMetrics:
    """Aggregate of many `LabelMatch`es (the table in docs/pseudo_labels.md)."""

    observations: int
    recall: float
    precision: float
    centroid_error_mean_cm: float
    centroid_error_median_cm: float
    mask_iou_mean: float
    mask_iou_median: float

    @classmethod
    def from_matches(cls, matches: Sequence[LabelMatch]) -> LabelMetrics:
        matched = sum(m.num_matched for m in matches)
        predicted = sum(m.num_predicted for m in matches)
        reference = sum(m.num_reference for m in matches)
        errors = np.concatenate([m.centroid_errors for m in matches] or [np.zeros(0)]) * 100.0
        ious = np.concatenate([m.mask_ious for m in matches] or [np.zeros(0)])

        def stat(fn, values):
            return float(fn(values)) if len(values) else float("nan")

        return cls(
            observations=len(matches),
            recall=matched / reference if reference else float("nan"),
            precision=matched / predicted if predicted else float("nan"),
            centroid_error_mean_cm=stat(np.mean, errors),
            centroid_error_median_cm=stat(np.median, errors),
            mask_iou_mean=stat(np.mean, ious),
            mask_iou_median=stat(np.median, ious),
        )


def evaluate_labeler(
    labeler: PseudoLabeler,
    samples: Iterable[tuple[Observation, np.ndarray]],
    reference: PseudoLabeler | None = None,
    match_radius: float = 0.05,
) -> LabelMetrics:
    """Metrics of `labeler` against `reference` (default: the segmentation) over
    (observation, segmentation) samples; the segmentation is passed to both labellers."""
    reference = reference or SegmentationLabeler()
    matches = [
        match_labels(labeler.label(obs, segmentation), reference.label(obs, segmentation), match_radius)
        for obs, segmentation in samples
    ]
    return LabelMetrics.from_matches(matches)


def _label_quality_table(argv: Sequence[str] | None = None) -> str:
    """`python -m vla3d_ros.data.labels ROOT [ROOT ...]`: the depth labeller vs. the simulator's
    segmentation over recorded episodes, as a markdown table (docs/pseudo_labels.md)."""
    import argparse
    from collections import defaultdict

    from vla3d_ros.data.episodes import EpisodeReader, list_episodes

    parser = argparse.ArgumentParser(prog="python -m vla3d_ros.data.labels", description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="episode roots (vla3d gen --out)")
    parser.add_argument("--stride", type=int, default=5, help="label every N-th step (default 5)")
    parser.add_argument("--match-radius", type=float, default=0.05, help="metres (default 0.05)")
    parser.add_argument("--workspace", type=float, nargs=6, metavar=("XL", "YL", "ZL", "XH", "YH", "ZH"),
                        help="base-frame crop for the depth labeller (default: none)")
    args = parser.parse_args(argv)
    config = DepthClusterConfig(**(
        {"workspace_low": tuple(args.workspace[:3]), "workspace_high": tuple(args.workspace[3:])}
        if args.workspace else {}))
    labeler, reference = DepthClusterLabeler(config), SegmentationLabeler()
    matches: dict[str, list[LabelMatch]] = defaultdict(list)
    for episode_dir in [d for root in args.roots for d in list_episodes(root)]:
        episode = EpisodeReader(episode_dir)
        perturbations = episode.meta.get("perturbations") or []
        group = f"{episode.meta['task']} | {', '.join(map(str, perturbations)) or 'none'}"
        for t in range(0, len(episode), args.stride):
            obs, segmentation = episode.observation(t), episode.segmentation(t)
            if segmentation is None:
                raise ValueError(f"{episode_dir} step {t} has no segmentation to compare against")
            match = match_labels(labeler.label(obs), reference.label(obs, segmentation), args.match_radius)
            matches[group].append(match)
            matches["all | all"].append(match)
    rows = ["| task | perturbations | observations | recall | precision | centroid error mean / median (cm) "
            "| mask IoU mean / median |", "|---|---|---|---|---|---|---|"]
    for group, group_matches in sorted(matches.items(), key=lambda item: item[0].startswith("all")):
        m = LabelMetrics.from_matches(group_matches)
        rows.append(f"| {group} | {m.observations} | {m.recall:.3f} | {m.precision:.3f} | "
                    f"{m.centroid_error_mean_cm:.2f} / {m.centroid_error_median_cm:.2f} | "
                    f"{m.mask_iou_mean:.3f} / {m.mask_iou_median:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(_label_quality_table())
