//! Reply routes: the latest inbound `req_id` per chat, so that groups (where proactive sends
//! fail with 600039) and DMs (where passive replies spare the proactive quota) can be answered
//! outside a turn (reference `wecom-aibot.md` §4.2, §6.3, §9 item 3).
//!
//! Entries carry the route tag of the connection they arrived on (`<run id>:<generation>`), so
//! a `req_id` from before a reconnect, a re-subscribe or a restart is never used again. Only
//! messages that passed the access policy are remembered. The map is bounded; the entry updated
//! least recently is evicted first.

use std::collections::HashMap;

use gateway_core::ChatAddress;

/// One remembered route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The inbound `req_id`.
    pub req_id: String,
    /// The route tag of the connection it arrived on.
    pub tag: String,
}

/// The bounded map of latest routes per chat.
#[derive(Debug)]
pub struct Routes {
    by_chat: HashMap<String, (u64, Route)>,
    seq: u64,
    cap: usize,
}

fn key(chat: &ChatAddress) -> String {
    format!("{}:{}", chat.kind.as_str(), chat.chat_id)
}

impl Routes {
    /// An empty map holding at most `cap` chats.
    pub fn new(cap: usize) -> Self {
        Self {
            by_chat: HashMap::new(),
            seq: 0,
            cap: cap.max(1),
        }
    }

    /// Remembers `req_id` as the latest route of `chat`. Empty values are ignored.
    pub fn remember(&mut self, chat: &ChatAddress, req_id: &str, tag: &str) {
        if chat.chat_id.is_empty() || req_id.is_empty() {
            return;
        }
        self.seq += 1;
        let route = Route {
            req_id: req_id.to_owned(),
            tag: tag.to_owned(),
        };
        self.by_chat.insert(key(chat), (self.seq, route));
        if self.by_chat.len() > self.cap {
            if let Some(oldest) = self
                .by_chat
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(k, _)| k.clone())
            {
                self.by_chat.remove(&oldest);
            }
        }
    }

    /// The latest route of `chat` if it belongs to the connection tagged `current`.
    pub fn fresh(&self, chat: &ChatAddress, current: &str) -> Option<Route> {
        self.by_chat
            .get(&key(chat))
            .map(|(_, r)| r)
            .filter(|r| r.tag == current)
            .cloned()
    }

    /// Number of chats remembered.
    pub fn len(&self) -> usize {
        self.by_chat.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_chat.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_fresh_route_wins_and_the_map_is_bounded() {
        let mut r = Routes::new(2);
        let g = ChatAddress::group("g1");
        r.remember(&g, "req-1", "run:1");
        r.remember(&g, "req-2", "run:1");
        assert_eq!(r.fresh(&g, "run:1").unwrap().req_id, "req-2");
        assert_eq!(r.fresh(&g, "run:2"), None, "stale after a reconnect");
        r.remember(&g, "", "run:1");
        r.remember(&ChatAddress::dm(""), "x", "run:1");
        assert_eq!(r.len(), 1, "empty keys and values are ignored");
        r.remember(&ChatAddress::dm("a"), "r", "run:1");
        r.remember(&g, "req-3", "run:1");
        r.remember(&ChatAddress::dm("b"), "r", "run:1");
        assert_eq!(r.len(), 2);
        assert!(
            r.fresh(&ChatAddress::dm("a"), "run:1").is_none(),
            "least recently updated evicted"
        );
        assert_eq!(r.fresh(&g, "run:1").unwrap().req_id, "req-3");
        // A DM and a group with the same id do not collide.
        assert!(r.fresh(&ChatAddress::dm("g1"), "run:1").is_none());
    }
}
