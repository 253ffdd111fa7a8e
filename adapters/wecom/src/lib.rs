//! The wecom adapter: the WeCom AI Bot long connection (WebSocket).

pub mod config;
pub mod protocol;
pub mod session;
