//! Text outside a stream: split by bytes (never cut), each piece sent proactively with
//! `aibot_send_msg` markdown to the chat — the user id for a DM, the chat id for a group
//! (reference `wecom-aibot-official.md` §2.6, §0 items 8 and 9). This is how notices, pairing
//! codes, `gateway send`, and the part of an answer that does not fit its stream (or comes after
//! the stream expired) reach the user. A passive reply would need an inbound `req_id`, which
//! carries one reply only, and the official SDK has no passive markdown at all.
//!
//! A piece whose answer never comes is **not** counted as delivered: the error goes back to the
//! caller, and the router records the reply as unconfirmed in the outbox (a proactive send is not
//! idempotent, so it is not re-sent blindly here).

use gateway_core::{AdapterError, ChatAddress, DeliveryLog, NoLog};
use tracing::warn;

use crate::adapter::{to_adapter_error, Inner};
use crate::protocol;
use crate::ratelimit::Lane;

impl Inner {
    /// Delivers a notice to `chat` (the rate limit's reserved lane), split into pieces of at
    /// most `text_max_bytes` bytes.
    pub(crate) async fn deliver_text(
        &self,
        chat: &ChatAddress,
        text: &str,
    ) -> Result<(), AdapterError> {
        self.deliver_text_logged(chat, text, Lane::Control, &NoLog)
            .await
    }

    /// The pieces [`Inner::deliver_text`] sends for `text`: blank pieces are dropped.
    pub(crate) fn text_pieces(&self, text: &str) -> Vec<String> {
        gateway_core::text::split_by_bytes(text, self.cfg.text_max_bytes)
            .into_iter()
            .filter(|p| protocol::has_visible(p))
            .collect()
    }

    /// [`Inner::deliver_text`], telling `log` the pieces and each one WeCom confirmed, so a
    /// retry resumes after the last confirmed piece (DESIGN.md "Delivery guarantee").
    /// `lane` is the rate limit's: [`Lane::Control`] for the ends of answers and notices,
    /// [`Lane::Normal`] for proactive sends.
    pub(crate) async fn deliver_text_logged(
        &self,
        chat: &ChatAddress,
        text: &str,
        lane: Lane,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        let pieces = self.text_pieces(text);
        log.planned(&pieces).await;
        self.send_pieces(chat, &pieces, 0, lane, log).await
    }

    /// Sends `pieces` in order, confirming each to `log` as part `first + i`.
    pub(crate) async fn send_pieces(
        &self,
        chat: &ChatAddress,
        pieces: &[String],
        first: usize,
        lane: Lane,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        for (i, piece) in pieces.iter().enumerate() {
            self.send_markdown(chat, piece, lane).await?;
            log.confirmed(first + i).await;
        }
        Ok(())
    }

    /// One proactive markdown message. `Ok` only on WeCom's success answer.
    pub(crate) async fn send_markdown(
        &self,
        chat: &ChatAddress,
        piece: &str,
        lane: Lane,
    ) -> Result<(), AdapterError> {
        let frame = protocol::markdown_send(&chat.chat_id, piece);
        self.request_metered(
            &chat.chat_id,
            lane,
            frame,
            self.cfg.request_timeout(),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            warn!(instance = %self.instance, error = %e, "Could not deliver a message to WeCom.");
            to_adapter_error(e)
        })
    }
}
