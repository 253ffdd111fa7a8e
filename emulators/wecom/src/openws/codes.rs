//! The errcodes and windows the fake openws server answers with (reference
//! `wecom-aibot-official.md` §4, §5, §10), named so that tests and callers match on them.
//!
//! Every code here is WeCom's except [`ERR_REPLY_USED`], which is the emulator's own: WeCom's
//! answer to a second passive reply on one `req_id` is not known (§11), so the emulator picks a
//! code no WeCom source uses, and a test that sees it knows the client broke the one-reply rule.

use std::time::Duration;

/// **Emulator-only, not a WeCom code.** A second passive reply on one inbound `req_id`: a frame
/// with a second `stream.id`, any passive reply after a stream or after another reply, or a
/// second card part in `stream_with_template_card` (§5: one reply per `req_id`).
pub const ERR_REPLY_USED: i64 = 899_001;
/// WeCom's "invalid message type": passive `markdown`/`text`, unknown `cmd` or `msgtype` (§10).
pub const ERR_INVALID_MSGTYPE: i64 = 40008;
/// WeCom's general "invalid parameter" (unverified, §10): a template card that misses required
/// fields or reuses a `task_id`, or a card update that does not match its event (§2.5, §9).
pub const ERR_INVALID_PARAMETER: i64 = 40058;
/// "Text content is empty": a proactive markdown with nothing in it.
pub const ERR_EMPTY_CONTENT: i64 = 44004;
/// Invalid `req_id`: unknown, of another connection, a stream on an event's `req_id`, or a reply
/// the event does not allow (§4, §5).
pub const ERR_INVALID_REQ_ID: i64 = 846605;
/// The stream is past its 6 minutes (or already finished) and can no longer be updated (§4).
pub const ERR_STREAM_EXPIRED: i64 = 846608;
/// The reply window of a welcome or card update is over (846604 in `wecom-aibot.md`; the
/// official sources give no code for it, §10).
pub const ERR_WINDOW_EXPIRED: i64 = 846604;

/// How long after the inbound message a stream takes frames (846608 after; §4).
pub const STREAM_WINDOW: Duration = Duration::from_secs(6 * 60);
/// The window for a welcome reply after `enter_chat` (§2.4).
pub const WELCOME_WINDOW: Duration = Duration::from_secs(5);
/// The window for `aibot_respond_update_msg` after `template_card_event` (§2.5).
pub const CARD_UPDATE_WINDOW: Duration = Duration::from_secs(5);
