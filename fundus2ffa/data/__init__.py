"""Data: one pipeline for stills and videos (issue 9).

Readers (:mod:`fundus2ffa.data.readers`) list :class:`Record` s (a CF and T >= 1 FFA frames; a still pair is
a one-frame video) and decode :class:`Sample` s; :class:`Preprocess` turns a raw CF (and its frames and
masks) into the network's input and back, for training, evaluation and prediction alike; :class:`Transform`
augments with one geometry for everything; :class:`FFADataset` and :class:`DataModule` serve batches of
the model's kind (``image`` or ``video``).
"""

from fundus2ffa.data.datamodule import DataModule, PairedDataModule, VideoDataModule
from fundus2ffa.data.dataset import FFADataset, VideoDataset, collate, collate_videos
from fundus2ffa.data.preprocess import Geometry, Preprocess
from fundus2ffa.data.readers import (
    FFAVideoCSV,
    IsfahanMISP,
    PairedFolder,
    PairReader,
    Reader,
    SyntheticPairs,
    SyntheticVideos,
    UWFPhases,
    UWFVideo,
)
from fundus2ffa.data.records import Frame, PairRecord, PairSample, Record, Sample, VideoFrame, VideoRecord, VideoSample
from fundus2ffa.data.transforms import PairedTransform, Transform, VideoTransform

VideoReader = Reader

__all__ = [
    "DataModule", "FFADataset", "FFAVideoCSV", "Frame", "Geometry", "IsfahanMISP", "PairReader", "PairRecord",
    "PairSample", "PairedDataModule", "PairedFolder", "PairedTransform", "Preprocess", "Reader", "Record", "Sample",
    "SyntheticPairs", "SyntheticVideos", "Transform", "UWFPhases", "UWFVideo", "VideoDataModule", "VideoDataset",
    "VideoFrame", "VideoReader", "VideoRecord", "VideoSample", "VideoTransform", "collate", "collate_videos",
]
