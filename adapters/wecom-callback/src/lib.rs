//! The wecom_callback adapter: WeCom self-built apps (encrypted XML callbacks in, REST API out).
