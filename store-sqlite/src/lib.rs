//! The embedded SQLite `StateStore`.
