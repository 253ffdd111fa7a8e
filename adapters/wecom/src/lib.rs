//! The wecom adapter: the WeCom AI Bot long connection (WebSocket).
