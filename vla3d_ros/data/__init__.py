"""Data: episodes on disk (episodes.py), pseudo-labels, completion targets and bags (ROS-free)."""
from vla3d_ros.data.episodes import EpisodeReader, EpisodeWriter, list_episodes

__all__ = ["EpisodeReader", "EpisodeWriter", "list_episodes"]
