//! Text helpers shared by adapters: splitting by UTF-8 bytes at paragraph boundaries.
