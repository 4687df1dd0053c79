//! Host hardware detection.
