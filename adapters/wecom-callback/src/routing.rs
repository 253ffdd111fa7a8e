//! Which app answers whom (wecom-callback reference §4.3 "Outbound app resolution", §11.8).
//!
//! Users are addressed as `corp_id:user_id`, so the corp prefix picks the app deterministically,
//! also after a restart. Only when several apps share a corp does the choice need memory: the
//! app a user last wrote to is persisted in the store (`kv`), so replies and proactive sends keep
//! going through that app after a restart. The baseline peer kept this map in memory and fell back
//! to `apps[0]` after a restart, sending through the wrong corp.

use std::sync::{Arc, Mutex};

use gateway_core::{AdapterError, StateStore, Target};
use tracing::warn;

use crate::config::AppConfig;

/// A recipient of `message/send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// One member (`touser`), bare UserID.
    User(String),
    /// A department (`toparty`).
    Party(String),
    /// A tag (`totag`).
    Tag(String),
    /// Everyone in the app's visible range (`touser: @all`).
    All,
}

impl Recipient {
    /// The `touser` / `toparty` / `totag` field of `message/send`.
    pub fn field(&self) -> (&'static str, &str) {
        match self {
            Recipient::User(u) => ("touser", u),
            Recipient::Party(p) => ("toparty", p),
            Recipient::Tag(t) => ("totag", t),
            Recipient::All => ("touser", "@all"),
        }
    }
}

/// The app set of an instance plus the persisted user→app choices.
#[derive(Debug)]
pub struct Routes {
    apps: Vec<Arc<AppConfig>>,
    ns: String,
    store: Mutex<Option<Arc<dyn StateStore>>>,
}

impl Routes {
    /// Routes over `apps` (configuration order) for `instance`.
    pub fn new(instance: &str, apps: Vec<Arc<AppConfig>>) -> Self {
        Self {
            apps,
            ns: format!("wecom_callback/{instance}/user_app"),
            store: Mutex::new(None),
        }
    }

    /// Attaches the store (at connect); before that only the corp prefix routes.
    pub fn set_store(&self, store: Arc<dyn StateStore>) {
        *self.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    fn store(&self) -> Option<Arc<dyn StateStore>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every app, in configuration order.
    pub fn apps(&self) -> &[Arc<AppConfig>] {
        &self.apps
    }

    /// The app called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<AppConfig>> {
        self.apps.iter().find(|a| a.name == name)
    }

    fn of_corp(&self, corp: &str) -> Vec<&Arc<AppConfig>> {
        self.apps.iter().filter(|a| a.corp_id == corp).collect()
    }

    /// Records that `scoped` (`corp:user`) wrote to `app`. Persisted only where it matters:
    /// when `app`'s corp has several apps.
    pub async fn remember(&self, scoped: &str, app: &AppConfig) {
        if self.of_corp(&app.corp_id).len() < 2 {
            return;
        }
        let Some(store) = self.store() else { return };
        if store
            .kv_get(&self.ns, scoped)
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some(&app.name)
        {
            return;
        }
        if let Err(e) = store.kv_put(&self.ns, scoped, &app.name).await {
            warn!(app = %app.name, error = %e, "Could not persist the user's app; replies may use another app of the corp after a restart.");
        }
    }

    /// The app and bare UserID for a user id: `corp_id:user_id`, or a bare UserID when only
    /// one corp is configured.
    pub async fn resolve_user(&self, id: &str) -> Result<(Arc<AppConfig>, String), AdapterError> {
        let id = id.trim();
        let (corp, user) = match id.split_once(':') {
            Some((corp, user)) if !self.of_corp(corp).is_empty() => (corp.to_owned(), user),
            Some((corp, _)) => {
                return Err(AdapterError::Unsupported(format!(
                    "no app of this instance belongs to corp `{corp}`; configured corps: {}",
                    self.corp_list()
                )))
            }
            None => {
                let mut corps: Vec<&str> = self.apps.iter().map(|a| a.corp_id.as_str()).collect();
                corps.dedup();
                corps.sort_unstable();
                corps.dedup();
                match corps.as_slice() {
                    [only] => ((*only).to_owned(), id),
                    _ => {
                        return Err(AdapterError::Unsupported(format!(
                            "user `{id}` is ambiguous with several corps configured; address it as <corp_id>:{id} (corps: {})",
                            self.corp_list()
                        )))
                    }
                }
            }
        };
        if user.is_empty() {
            return Err(AdapterError::Unsupported("empty user id".into()));
        }
        let candidates = self.of_corp(&corp);
        let mut chosen = candidates[0].clone();
        if candidates.len() > 1 {
            if let Some(store) = self.store() {
                let scoped = format!("{corp}:{user}");
                if let Ok(Some(name)) = store.kv_get(&self.ns, &scoped).await {
                    if let Some(app) = candidates.iter().find(|a| a.name == name) {
                        chosen = (*app).clone();
                    }
                }
            }
        }
        Ok((chosen, user.to_owned()))
    }

    /// The app and recipient for a proactive target. `party:`/`tag:` ids may be prefixed with
    /// an app name or CorpID (`party:sales:2`); otherwise, like `@all`, they use the first app.
    pub async fn resolve(
        &self,
        target: &Target,
    ) -> Result<(Arc<AppConfig>, Recipient), AdapterError> {
        match target {
            Target::User(id) => {
                let (app, user) = self.resolve_user(id).await?;
                Ok((app, Recipient::User(user)))
            }
            Target::Party(id) => {
                let (app, id) = self.scoped_group(id)?;
                Ok((app, Recipient::Party(id)))
            }
            Target::Tag(id) => {
                let (app, id) = self.scoped_group(id)?;
                Ok((app, Recipient::Tag(id)))
            }
            Target::All => Ok((self.default_app()?, Recipient::All)),
            Target::Group(_) => Err(AdapterError::Unsupported(
                "self-built apps have no group chats; send to user:ID, party:ID, tag:ID or @all"
                    .into(),
            )),
        }
    }

    fn default_app(&self) -> Result<Arc<AppConfig>, AdapterError> {
        self.apps
            .first()
            .cloned()
            .ok_or_else(|| AdapterError::Unsupported("no callback apps configured".into()))
    }

    fn scoped_group(&self, id: &str) -> Result<(Arc<AppConfig>, String), AdapterError> {
        if let Some((prefix, rest)) = id.split_once(':') {
            let app = self
                .by_name(prefix)
                .or_else(|| self.apps.iter().find(|a| a.corp_id == prefix))
                .ok_or_else(|| {
                    AdapterError::Unsupported(format!(
                        "`{prefix}` is neither an app name nor a CorpID of this instance"
                    ))
                })?;
            return Ok((app.clone(), rest.to_owned()));
        }
        Ok((self.default_app()?, id.to_owned()))
    }

    fn corp_list(&self) -> String {
        let mut corps: Vec<&str> = self.apps.iter().map(|a| a.corp_id.as_str()).collect();
        corps.sort_unstable();
        corps.dedup();
        corps.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::memory_store::MemoryStore;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn app(name: &str, corp: &str, agent: i64) -> Arc<AppConfig> {
        Arc::new(AppConfig {
            name: name.into(),
            corp_id: corp.into(),
            corp_secret: "s".into(),
            agent_id: agent,
            crypto: wecom_common::WeComCrypto::new("t", KEY, corp).unwrap(),
            path: "/wecom/callback".into(),
            welcome_text: None,
        })
    }

    #[tokio::test]
    async fn the_corp_prefix_picks_the_app() {
        let r = Routes::new("i", vec![app("a", "corpA", 1), app("b", "corpB", 2)]);
        let (a, u) = r.resolve_user("corpB:alice").await.unwrap();
        assert_eq!((a.name.as_str(), u.as_str()), ("b", "alice"));
        let (a, _) = r.resolve_user("corpA:alice").await.unwrap();
        assert_eq!(a.name, "a");
        assert!(
            r.resolve_user("alice").await.is_err(),
            "bare ids are ambiguous across corps"
        );
        assert!(r.resolve_user("corpC:alice").await.is_err());
        assert!(r.resolve(&Target::Group("x".into())).await.is_err());
    }

    #[tokio::test]
    async fn shared_corps_remember_the_users_app_across_restarts() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let apps = vec![app("hr", "corp", 1), app("it", "corp", 2)];
        let r = Routes::new("i", apps.clone());
        r.set_store(store.clone());
        assert_eq!(r.resolve_user("corp:bob").await.unwrap().0.name, "hr");
        r.remember("corp:bob", &apps[1]).await;
        // A new Routes over the same store stands for the restarted process.
        let again = Routes::new("i", apps);
        again.set_store(store);
        assert_eq!(again.resolve_user("corp:bob").await.unwrap().0.name, "it");
        assert_eq!(again.resolve_user("bob").await.unwrap().0.name, "it");
    }

    #[tokio::test]
    async fn groups_use_a_named_app_or_the_first() {
        let r = Routes::new("i", vec![app("a", "corpA", 1), app("b", "corpB", 2)]);
        let (a, rcpt) = r.resolve(&Target::Party("b:7".into())).await.unwrap();
        assert_eq!((a.name.as_str(), rcpt), ("b", Recipient::Party("7".into())));
        let (a, rcpt) = r.resolve(&Target::Tag("3".into())).await.unwrap();
        assert_eq!((a.name.as_str(), rcpt), ("a", Recipient::Tag("3".into())));
        let (a, rcpt) = r.resolve(&Target::All).await.unwrap();
        assert_eq!((a.name.as_str(), rcpt.field()), ("a", ("touser", "@all")));
    }
}
