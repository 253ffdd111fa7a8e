//! In-memory `StateStore` (tests, and `gateway chat` without a data dir).
