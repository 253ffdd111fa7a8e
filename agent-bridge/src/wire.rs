//! The turn request that the `http` and `command` backends send: one JSON object, schema
//! version 1. `agent-bridge/README.md` documents the same schema for agent authors.
//!
//! ```json
//! {
//!   "version": 1,
//!   "turn_id": "turn-7",
//!   "session_key": "wecom:dm:alice",
//!   "session_id": "0f3c…",
//!   "instance": "wecom",
//!   "sender": { "user_id": "alice", "display_name": "Alice" },
//!   "chat": { "kind": "dm", "chat_id": "alice" },
//!   "text": "What is in this picture?",
//!   "attachments": [
//!     { "kind": "image", "path": "/var/lib/gateway/media/ab12.jpg", "name": "photo.jpg",
//!       "mime": "image/jpeg", "size": 48213 }
//!   ],
//!   "history": [
//!     { "role": "user", "text": "hi", "at": "2025-05-01T08:00:00Z" },
//!     { "role": "assistant", "text": "Hello!", "at": "2025-05-01T08:00:02Z" }
//!   ]
//! }
//! ```
//!
//! - `version` is bumped only for incompatible changes; new fields may appear in version 1.
//! - `turn_id` is unique per backend for the life of the process; a persistent command echoes it.
//! - `sender.display_name` is omitted when unknown; `chat.kind` is `dm` or `group`.
//! - `attachments[].kind` is `image | file | voice | video`; `path` is a local file that is
//!   already decrypted, readable by the gateway's user, and deleted by the gateway later.
//! - `history` is oldest first and does not contain the current message; `role` is `user` or
//!   `assistant`; `at` is RFC 3339 UTC.

use serde::Serialize;

use crate::AgentTurn;

/// The schema version written in every request.
pub const SCHEMA_VERSION: u32 = 1;

/// A turn as the `http` and `command` backends send it (see the module documentation).
#[derive(Debug, Serialize)]
pub struct TurnRequest<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// Correlates the answer lines of a persistent command with this turn.
    pub turn_id: &'a str,
    /// The turn itself, flattened into the object.
    #[serde(flatten)]
    pub turn: &'a AgentTurn,
}

impl<'a> TurnRequest<'a> {
    /// The request for `turn` under `turn_id`.
    pub fn new(turn_id: &'a str, turn: &'a AgentTurn) -> Self {
        Self {
            version: SCHEMA_VERSION,
            turn_id,
            turn,
        }
    }

    /// The request as one line of JSON, without the trailing newline.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}
