//! `gateway-core`: the message model, the adapter contract, and the engines that do not touch the
//! network — access policy, pairing, sessions — plus the `StateStore` trait and an in-memory store.
//!
//! This crate depends on no other crate of the workspace, and on no transport crate.

pub mod adapter;
pub mod clock;
pub mod commands;
pub mod error;
pub mod health;
pub mod memory_store;
pub mod model;
pub mod pairing;
pub mod policy;
pub mod private_fs;
pub mod redact;
pub mod session;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod store_conformance;
pub mod text;

pub use adapter::{
    AdapterContext, AdapterFactory, Admission, Capabilities, ConfigKey, DeliveryLog, InboundSink,
    KeyKind, NoLog, PlatformAdapter, ReplySink, TurnOutcome,
};
pub use error::{AdapterError, ConfigError, StoreError};
pub use model::{
    Attachment, ChatAddress, ChatKind, Content, InboundMessage, MediaKind, OutboundMessage,
    PlatformEvent, Sender, Target,
};
pub use store::{DeliveryState, IntakeEntry, StateStore};
