//! Loader for the embedded XDP programs.
