//! Pairing: one-time codes that let an operator admit unknown DM senders.
//!
//! Implements the flow of reference `gateway-semantics.md` §5.4: an unknown DM sender under
//! `dm_policy: pairing` gets an 8-character code, the operator approves it on the host (by the
//! code, or by the request id that `list` shows), and the user is recognised from their next
//! message. Codes are drawn from the OS CSPRNG and stored only as salted SHA-256 hashes; they
//! expire after an hour. Abuse limits: one request per user per 10 minutes, three pending codes
//! per instance, and five failed approvals lock the instance for an hour (both generation and
//! approval).
//!
//! State lives in the store's key-value space, namespace `pairing:<instance>`:
//! `pending:<request id>`, `approved:<lowercased user id>`, `rate:<lowercased user id>`,
//! `failures` and `lockout`, all JSON. Namespace `pairing` indexes the instances that have
//! pairing state, so `list(None)` can find them. Mutations are serialised by one async lock, which
//! is enough for one gateway process; a shared multi-process store would need a store-side lock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::OsRng;
use rand::TryRngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::error::StoreError;
use crate::store::StateStore;

#[cfg(test)]
mod tests;

/// The code alphabet: 32 characters, without the look-alikes 0/O and 1/I.
pub const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Length of a pairing code.
pub const CODE_LEN: usize = 8;
/// Length of a request id (shorter than a code, so an input is unambiguously one or the other).
pub const REQUEST_ID_LEN: usize = 6;
/// How long a code stays valid.
pub const CODE_TTL: Duration = Duration::from_secs(60 * 60);
/// The minimum time between two code requests of one user.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Pending codes allowed per instance at once.
pub const MAX_PENDING: usize = 3;
/// Failed approvals that lock an instance.
pub const MAX_FAILED_APPROVALS: u32 = 5;
/// How long a lockout lasts; also how long failed approvals are remembered.
pub const LOCKOUT: Duration = Duration::from_secs(60 * 60);

/// Namespace listing the instances that have pairing state.
const INDEX_NS: &str = "pairing";
const PENDING: &str = "pending:";
const APPROVED: &str = "approved:";
const RATE: &str = "rate:";
const FAILURES: &str = "failures";
const LOCKOUT_KEY: &str = "lockout";

/// A freshly issued code, to be sent to the user once. Its `Debug` output redacts the code.
#[derive(Clone)]
pub struct PairingRequest {
    /// The platform instance.
    pub instance: String,
    /// The request id the operator sees in `list` (and may approve with).
    pub request_id: String,
    /// The user the code was issued to.
    pub user_id: String,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
    code: SecretString,
}

impl PairingRequest {
    /// The plaintext code. Send it to the user; never log it.
    pub fn code(&self) -> &str {
        self.code.expose_secret()
    }
}

impl std::fmt::Debug for PairingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingRequest")
            .field("instance", &self.instance)
            .field("request_id", &self.request_id)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .field("code", &"[redacted]")
            .finish()
    }
}

/// A user admitted through pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovedUser {
    /// The platform instance.
    pub instance: String,
    /// The user id as the platform sent it.
    pub user_id: String,
    /// Display name at request time, if the platform gave one.
    pub user_name: Option<String>,
    /// When the operator approved.
    pub approved_at: DateTime<Utc>,
}

/// A pending request as `list` shows it (no code, no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingView {
    /// The platform instance.
    pub instance: String,
    /// Approve with this id, or with the code the user received.
    pub request_id: String,
    /// Who asked.
    pub user_id: String,
    /// Their display name, if known.
    pub user_name: Option<String>,
    /// When the code was issued.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// The output of [`PairingEngine::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PairingList {
    /// Live pending requests, oldest first.
    pub pending: Vec<PendingView>,
    /// Approved users, by instance then user id.
    pub approved: Vec<ApprovedUser>,
}

/// Why [`PairingEngine::request`] issued no code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingRefusal {
    /// The user asked less than [`REQUEST_INTERVAL`] ago.
    #[error("pairing requested too recently; retry in {}s", retry_in.as_secs())]
    RateLimited {
        /// Time until the user may ask again.
        retry_in: Duration,
    },
    /// The instance already has [`MAX_PENDING`] live codes.
    #[error("too many pending pairing requests (at most {max})")]
    TooManyPending {
        /// The limit.
        max: usize,
    },
    /// Too many failed approvals; pairing is locked.
    #[error("pairing is locked until {until}")]
    LockedOut {
        /// When the lockout ends.
        until: DateTime<Utc>,
    },
    /// The sender has no user id.
    #[error("empty user id")]
    EmptyUserId,
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`PairingEngine::approve`] admitted nobody.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApproveError {
    /// No live request has that code or id. The attempt counted toward the lockout.
    #[error("no pending pairing request matches; {attempts_left} attempts left before lockout")]
    NoMatch {
        /// Failed attempts left before the instance locks.
        attempts_left: u32,
    },
    /// Too many failed approvals (possibly this one); pairing is locked.
    #[error("pairing is locked until {until}")]
    LockedOut {
        /// When the lockout ends.
        until: DateTime<Utc>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An error from the pairing operations that cannot be refused (`revoke`, `list`, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A pending request as stored: the code only as a salted hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRecord {
    request_id: String,
    user_id: String,
    user_name: Option<String>,
    /// 16 random bytes, hex.
    salt: String,
    /// SHA-256(salt || code), hex.
    hash: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApprovedRecord {
    user_id: String,
    user_name: Option<String>,
    approved_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RateRecord {
    requested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FailureRecord {
    count: u32,
    /// The first failure of the current run; the run is forgotten [`LOCKOUT`] after it.
    since: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockoutRecord {
    until: DateTime<Utc>,
}

/// An instance's live state after expired entries were purged.
struct Live {
    pending: Vec<PendingRecord>,
    rate: Vec<(String, RateRecord)>,
    failures: Option<FailureRecord>,
    locked_until: Option<DateTime<Utc>>,
}

/// Issues, approves and revokes pairings, per platform instance.
#[derive(Debug)]
pub struct PairingEngine {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    /// Serialises read-modify-write sequences (limits must hold under concurrent requests).
    lock: tokio::sync::Mutex<()>,
}

impl PairingEngine {
    /// An engine over the store's key-value space.
    pub fn new(store: Arc<dyn StateStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Issues a code for `user_id` on `instance`, unless a limit refuses it. When the user
    /// still holds a live code from an earlier window, that code is replaced, so one user never
    /// holds more than one of the instance's pending slots.
    pub async fn request(
        &self,
        instance: &str,
        user_id: &str,
        user_name: Option<&str>,
    ) -> Result<PairingRequest, PairingRefusal> {
        let user_id = user_id.trim();
        if user_id.is_empty() {
            return Err(PairingRefusal::EmptyUserId);
        }
        let user_key = user_id.to_lowercase();
        let _guard = self.lock.lock().await;
        let now = self.clock.now();
        let ns = namespace(instance);
        let live = self.purge(&ns, now).await?;

        if let Some(until) = live.locked_until {
            return Err(PairingRefusal::LockedOut { until });
        }
        if let Some((_, rate)) = live.rate.iter().find(|(k, _)| *k == user_key) {
            let retry_in = (rate.requested_at + delta(REQUEST_INTERVAL) - now)
                .to_std()
                .unwrap_or_default();
            return Err(PairingRefusal::RateLimited { retry_in });
        }
        let (own, others): (Vec<_>, Vec<_>) = live
            .pending
            .iter()
            .partition(|p| p.user_id.to_lowercase() == user_key);
        if others.len() >= MAX_PENDING {
            return Err(PairingRefusal::TooManyPending { max: MAX_PENDING });
        }

        let code = random_string(CODE_LEN)?;
        let request_id = loop {
            let id = random_string(REQUEST_ID_LEN)?;
            // Ids are shown to the operator and must be unique among the live few.
            if !live.pending.iter().any(|p| p.request_id == id) {
                break id;
            }
        };
        let mut salt = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| PairingRefusal::Random(e.to_string()))?;
        let expires_at = now + delta(CODE_TTL);
        let record = PendingRecord {
            request_id: request_id.clone(),
            user_id: user_id.to_string(),
            user_name: user_name.map(str::to_string),
            salt: hex::encode(salt),
            hash: hex::encode(code_hash(&salt, &code)),
            created_at: now,
            expires_at,
        };

        self.store.kv_put(INDEX_NS, instance, "").await?;
        self.store
            .kv_put(&ns, &format!("{PENDING}{request_id}"), &encode(&record))
            .await?;
        for old in own {
            self.store
                .kv_delete(&ns, &format!("{PENDING}{}", old.request_id))
                .await?;
        }
        let rate = RateRecord { requested_at: now };
        self.store
            .kv_put(&ns, &format!("{RATE}{user_key}"), &encode(&rate))
            .await?;
        info!(instance, request_id = %request_id, "Pairing code issued.");

        Ok(PairingRequest {
            instance: instance.to_string(),
            request_id,
            user_id: user_id.to_string(),
            expires_at,
            code: SecretString::from(code),
        })
    }

    /// Approves the request whose code or request id is `code_or_request_id` (case-insensitive;
    /// spaces and dashes are ignored). A value that matches nothing counts as a failed attempt;
    /// the [`MAX_FAILED_APPROVALS`]th within an hour locks the instance.
    pub async fn approve(
        &self,
        instance: &str,
        code_or_request_id: &str,
    ) -> Result<ApprovedUser, ApproveError> {
        let _guard = self.lock.lock().await;
        let now = self.clock.now();
        let ns = namespace(instance);
        let live = self.purge(&ns, now).await?;
        if let Some(until) = live.locked_until {
            return Err(ApproveError::LockedOut { until });
        }

        let input: String = code_or_request_id
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_uppercase)
            .collect();
        let matched = live
            .pending
            .into_iter()
            .find(|p| matches_request(p, &input));

        let Some(p) = matched else {
            return Err(self
                .record_failure(instance, &ns, live.failures, now)
                .await?);
        };
        let approved = ApprovedRecord {
            user_id: p.user_id.clone(),
            user_name: p.user_name.clone(),
            approved_at: now,
        };
        let user_key = p.user_id.to_lowercase();
        self.store
            .kv_put(&ns, &format!("{APPROVED}{user_key}"), &encode(&approved))
            .await?;
        self.store
            .kv_delete(&ns, &format!("{PENDING}{}", p.request_id))
            .await?;
        if live.failures.is_some() {
            self.store.kv_delete(&ns, FAILURES).await?;
        }
        info!(instance, request_id = %p.request_id, "Pairing approved.");
        Ok(ApprovedUser {
            instance: instance.to_string(),
            user_id: approved.user_id,
            user_name: approved.user_name,
            approved_at: now,
        })
    }

    /// Counts a failed approval; returns the error to report (a lockout on the last one).
    async fn record_failure(
        &self,
        instance: &str,
        ns: &str,
        failures: Option<FailureRecord>,
        now: DateTime<Utc>,
    ) -> Result<ApproveError, StoreError> {
        let mut f = failures.unwrap_or(FailureRecord {
            count: 0,
            since: now,
        });
        f.count += 1;
        if f.count >= MAX_FAILED_APPROVALS {
            let until = now + delta(LOCKOUT);
            self.store
                .kv_put(ns, LOCKOUT_KEY, &encode(&LockoutRecord { until }))
                .await?;
            self.store.kv_delete(ns, FAILURES).await?;
            warn!(instance, failures = f.count, %until, "Pairing locked after failed approvals.");
            return Ok(ApproveError::LockedOut { until });
        }
        self.store.kv_put(ns, FAILURES, &encode(&f)).await?;
        info!(
            instance,
            failures = f.count,
            "Pairing approval matched no request."
        );
        Ok(ApproveError::NoMatch {
            attempts_left: MAX_FAILED_APPROVALS - f.count,
        })
    }

    /// Removes an approved user. True if they were approved.
    pub async fn revoke(&self, instance: &str, user_id: &str) -> Result<bool, PairingError> {
        let _guard = self.lock.lock().await;
        let ns = namespace(instance);
        self.purge(&ns, self.clock.now()).await?;
        let key = format!("{APPROVED}{}", user_id.trim().to_lowercase());
        let existed = self.store.kv_delete(&ns, &key).await?;
        if existed {
            info!(instance, "Pairing revoked.");
        }
        Ok(existed)
    }

    /// Drops every pending request of `instance`. Returns how many live ones were dropped.
    pub async fn clear_pending(&self, instance: &str) -> Result<usize, PairingError> {
        let _guard = self.lock.lock().await;
        let ns = namespace(instance);
        let live = self.purge(&ns, self.clock.now()).await?;
        for p in &live.pending {
            self.store
                .kv_delete(&ns, &format!("{PENDING}{}", p.request_id))
                .await?;
        }
        Ok(live.pending.len())
    }

    /// Pending requests and approved users of one instance, or of every instance with pairing
    /// state.
    pub async fn list(&self, instance: Option<&str>) -> Result<PairingList, PairingError> {
        let _guard = self.lock.lock().await;
        let now = self.clock.now();
        let instances = match instance {
            Some(i) => vec![i.to_string()],
            None => self
                .store
                .kv_list(INDEX_NS, "")
                .await?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        let mut out = PairingList::default();
        for instance in instances {
            let ns = namespace(&instance);
            let mut live = self.purge(&ns, now).await?;
            live.pending
                .sort_by(|a, b| (a.created_at, &a.request_id).cmp(&(b.created_at, &b.request_id)));
            out.pending
                .extend(live.pending.into_iter().map(|p| PendingView {
                    instance: instance.clone(),
                    request_id: p.request_id,
                    user_id: p.user_id,
                    user_name: p.user_name,
                    created_at: p.created_at,
                    expires_at: p.expires_at,
                }));
            for (key, raw) in self.store.kv_list(&ns, APPROVED).await? {
                let a: ApprovedRecord = decode(&key, &raw)?;
                out.approved.push(ApprovedUser {
                    instance: instance.clone(),
                    user_id: a.user_id,
                    user_name: a.user_name,
                    approved_at: a.approved_at,
                });
            }
        }
        Ok(out)
    }

    /// Whether `user_id` (case-insensitive) is approved on `instance`. One point read: the
    /// router calls this for every DM from a sender the allowlist does not know.
    pub async fn is_approved(&self, instance: &str, user_id: &str) -> Result<bool, PairingError> {
        let key = format!("{APPROVED}{}", user_id.trim().to_lowercase());
        Ok(self
            .store
            .kv_get(&namespace(instance), &key)
            .await?
            .is_some())
    }

    /// Deletes what has expired in `ns` and returns what is live. Unreadable records are
    /// dropped with a warning rather than failing every later operation: a lost request, rate
    /// stamp or failure count is harmless, and a lockout would have ended within the hour.
    async fn purge(&self, ns: &str, now: DateTime<Utc>) -> Result<Live, StoreError> {
        let mut pending = Vec::new();
        for (key, raw) in self.store.kv_list(ns, PENDING).await? {
            match self.read_or_drop::<PendingRecord>(ns, &key, &raw).await? {
                Some(p) if p.expires_at > now => pending.push(p),
                Some(_) => {
                    self.store.kv_delete(ns, &key).await?;
                }
                None => {}
            }
        }

        let mut rate = Vec::new();
        for (key, raw) in self.store.kv_list(ns, RATE).await? {
            match self.read_or_drop::<RateRecord>(ns, &key, &raw).await? {
                Some(r) if r.requested_at + delta(REQUEST_INTERVAL) > now => {
                    rate.push((key[RATE.len()..].to_string(), r));
                }
                Some(_) => {
                    self.store.kv_delete(ns, &key).await?;
                }
                None => {}
            }
        }

        let mut failures = None;
        if let Some(raw) = self.store.kv_get(ns, FAILURES).await? {
            match self
                .read_or_drop::<FailureRecord>(ns, FAILURES, &raw)
                .await?
            {
                Some(f) if f.since + delta(LOCKOUT) > now => failures = Some(f),
                Some(_) => {
                    self.store.kv_delete(ns, FAILURES).await?;
                }
                None => {}
            }
        }

        let mut locked_until = None;
        if let Some(raw) = self.store.kv_get(ns, LOCKOUT_KEY).await? {
            match self
                .read_or_drop::<LockoutRecord>(ns, LOCKOUT_KEY, &raw)
                .await?
            {
                Some(l) if l.until > now => locked_until = Some(l.until),
                Some(_) => {
                    self.store.kv_delete(ns, LOCKOUT_KEY).await?;
                    info!(ns, "Pairing lockout ended.");
                }
                None => {}
            }
        }

        Ok(Live {
            pending,
            rate,
            failures,
            locked_until,
        })
    }

    /// Decodes a record, or deletes it (with a warning) when it cannot be decoded.
    async fn read_or_drop<T: DeserializeOwned>(
        &self,
        ns: &str,
        key: &str,
        raw: &str,
    ) -> Result<Option<T>, StoreError> {
        match serde_json::from_str(raw) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                warn!(ns, key, error = %e, "Dropping unreadable pairing record.");
                self.store.kv_delete(ns, key).await?;
                Ok(None)
            }
        }
    }
}

/// The key-value namespace of an instance.
fn namespace(instance: &str) -> String {
    format!("pairing:{instance}")
}

/// Whether normalised `input` is this request's id or its code. Both comparisons run in
/// constant time, and both always run, so timing does not reveal which one was tried.
fn matches_request(p: &PendingRecord, input: &str) -> bool {
    let by_id = p.request_id.as_bytes().ct_eq(input.as_bytes());
    let by_code = match (hex::decode(&p.salt), hex::decode(&p.hash)) {
        (Ok(salt), Ok(hash)) => code_hash(&salt, input).as_slice().ct_eq(hash.as_slice()),
        _ => subtle::Choice::from(0),
    };
    (by_id | by_code).into()
}

/// SHA-256 over the salt followed by the normalised code.
fn code_hash(salt: &[u8], code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// `len` characters from [`CODE_ALPHABET`], drawn from the OS CSPRNG. 256 is a multiple of 32,
/// so masking a random byte to 5 bits picks every character with equal probability.
fn random_string(len: usize) -> Result<String, PairingRefusal> {
    let mut bytes = vec![0u8; len];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| PairingRefusal::Random(e.to_string()))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(CODE_ALPHABET[usize::from(b & 31)]))
        .collect())
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn encode<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs to a string cannot fail; an empty object keeps it total.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

fn decode<T: DeserializeOwned>(key: &str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("pairing {key}: {e}")))
}
