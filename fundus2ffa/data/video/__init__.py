"""FFA videos (Fundus2Video, reference_spec section 4.2): readers of video layouts, per-item frame
sampling, field-of-view crop, shared-geometry augmentation, the knowledge mask, and the datamodule.

Readers (:class:`FFAVideoCSV`, :class:`UWFVideo`, :class:`SyntheticVideos`) list :class:`VideoRecord` s
and decode :class:`VideoSample` s; :class:`VideoDataset` turns them into tensors; :class:`VideoDataModule`
splits by patient and serves batches (``kind: video``).
"""

from fundus2ffa.data.video.datamodule import VideoDataModule
from fundus2ffa.data.video.dataset import VideoDataset, collate_videos
from fundus2ffa.data.video.readers import FFAVideoCSV, SyntheticVideos, UWFVideo, VideoReader
from fundus2ffa.data.video.records import VideoFrame, VideoRecord, VideoSample
from fundus2ffa.data.video.transforms import VideoTransform

__all__ = [
    "FFAVideoCSV",
    "SyntheticVideos",
    "UWFVideo",
    "VideoDataModule",
    "VideoDataset",
    "VideoFrame",
    "VideoReader",
    "VideoRecord",
    "VideoSample",
    "VideoTransform",
    "collate_videos",
]
