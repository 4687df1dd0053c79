//! Per-subscriber outgoing stream rewriting.
