//! Non-stream delivery of text: split by bytes (never cut), each piece sent as a markdown reply
//! on a fresh `req_id` of the chat, else proactively with `aibot_send_msg` (reference
//! `wecom-aibot.md` §4.2). Groups reject proactive sends (600039), so for them the chat's latest
//! inbound `req_id` is the real path; the proactive send is still tried last because some bots
//! are allowed it. This is also the fallback of the stream engine.

use gateway_core::{AdapterError, ChatAddress, DeliveryLog, NoLog};
use tracing::{debug, warn};

use crate::adapter::{to_adapter_error, Inner};
use crate::protocol;
use crate::ratelimit::Lane;
use crate::session::ReqError;

/// Which reply routes to prefer or avoid.
#[derive(Debug, Clone, Default)]
pub(crate) struct Via {
    /// Try a markdown reply on this `req_id` first (a stream failed with 600039 there: the
    /// client cannot show streams, but a markdown reply may work).
    pub first: Option<String>,
    /// Do not use this `req_id` as the chat's latest route (its stream failed); `first` may still
    /// name it.
    pub avoid: Option<String>,
    /// The lane of the rate limit (replies and notices use the control lane).
    pub control: bool,
}

impl Inner {
    /// Delivers `text` to `chat`, split into pieces of at most `text_max_bytes` bytes.
    pub(crate) async fn deliver_text(
        &self,
        chat: &ChatAddress,
        text: &str,
        via: Via,
    ) -> Result<(), AdapterError> {
        self.deliver_text_logged(chat, text, via, &NoLog).await
    }

    /// [`Inner::deliver_text`], telling `log` the pieces and each one WeCom confirmed, so a
    /// retry resumes after the last confirmed piece (DESIGN.md "Delivery guarantee").
    pub(crate) async fn deliver_text_logged(
        &self,
        chat: &ChatAddress,
        text: &str,
        via: Via,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        let pieces: Vec<String> = gateway_core::text::split_by_bytes(text, self.cfg.text_max_bytes)
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .collect();
        log.planned(&pieces).await;
        for (i, piece) in pieces.iter().enumerate() {
            self.deliver_piece(chat, piece, &via).await?;
            log.confirmed(i).await;
        }
        Ok(())
    }

    async fn deliver_piece(
        &self,
        chat: &ChatAddress,
        piece: &str,
        via: &Via,
    ) -> Result<(), AdapterError> {
        let lane = if via.control {
            Lane::Control
        } else {
            Lane::Normal
        };
        let timeout = self.cfg.request_timeout();
        let mut last: Option<ReqError> = None;
        let mut tried = Vec::new();
        // 1. The req_id a failed stream pointed at (600039 only).
        // 2. The chat's latest req_id on the live connection.
        let mut passive = Vec::new();
        passive.extend(via.first.clone());
        passive.extend(
            self.fresh_route(chat)
                .filter(|r| via.avoid.as_deref() != Some(r.as_str())),
        );
        for req_id in passive {
            if tried.contains(&req_id) {
                continue;
            }
            tried.push(req_id.clone());
            let frame = protocol::markdown_reply(&req_id, piece);
            match self
                .request_metered(&chat.chat_id, lane, frame, timeout)
                .await
            {
                Ok(_) => return Ok(()),
                // No answer: the bytes went out and were most likely shown; do not duplicate.
                Err(ReqError::Timeout) => return Ok(()),
                Err(e) => {
                    debug!(instance = %self.instance, error = %e, "Passive reply failed; trying the next route.");
                    last = Some(e);
                }
            }
        }
        // 3. Proactive send (the user id for DMs, the chat id for groups).
        let frame = protocol::markdown_send(&chat.chat_id, piece);
        match self
            .request_metered(&chat.chat_id, lane, frame, timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(ReqError::Timeout) => Ok(()),
            Err(e) => {
                if chat.is_group() && e.code() == Some(600039) {
                    warn!(instance = %self.instance, "No reply route for a group chat: WeCom refuses proactive group sends and no fresh req_id is known.");
                } else {
                    warn!(instance = %self.instance, error = %e, previous = ?last.map(|l| l.to_string()), "Could not deliver a message to WeCom.");
                }
                Err(to_adapter_error(e))
            }
        }
    }
}
