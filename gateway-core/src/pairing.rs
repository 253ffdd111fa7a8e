//! Pairing: one-time codes that let an operator admit unknown DM senders.
