//! Fake AI Bot long-connection server (openws).
