//! Session engine: session keys, per-key serialisation of turns, busy modes, reset policy.
