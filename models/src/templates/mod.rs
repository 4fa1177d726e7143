//! Online log-template mining (Drain-style).
