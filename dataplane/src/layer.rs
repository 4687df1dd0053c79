//! Layer selection.
