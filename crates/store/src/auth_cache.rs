//! A per-replica, in-memory cache of credential lookups (API tokens and
//! browser sessions), so an authenticated request makes no database round
//! trip for its credential when the credential was seen recently.
//!
//! Why it stays correct:
//!
//! * **Every change is broadcast.** The store's own writes that can take a
//!   credential away (revoking a token, changing or deleting a user, changing
//!   a password, ending a session) send `NOTIFY sr_auth` in the same
//!   transaction on PostgreSQL, so every replica's listener
//!   ([`Store::spawn_auth_invalidation`]) drops the entries within
//!   milliseconds of the commit, and drop them in this process at once.
//! * **No listener, no cache.** On PostgreSQL entries are served only while
//!   the listener is connected and listening; when its connection is lost the
//!   cache is emptied and bypassed until it listens again.
//! * **No stale refill.** A lookup that started before an invalidation does
//!   not store its (possibly stale) answer: every invalidation bumps a
//!   generation, and an answer is kept only if the generation did not move
//!   while it was read.
//! * **Expiry is checked on every hit**, against the stored expiry time, so an
//!   expired token or session is refused at once.
//! * **A backstop age.** Entries are re-read after [`POSTGRES_MAX_AGE`] in any
//!   case (a write made by hand in SQL sends no notification). On SQLite, one
//!   process serves the file and invalidates in process; entries live
//!   [`SQLITE_MAX_AGE`], which bounds what an `admin` command run in another
//!   process can leave stale.
//!
//! [`Store::spawn_auth_invalidation`]: crate::Store::spawn_auth_invalidation

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serviceradar_domain::{ApiTokenId, UserId};

use crate::auth::{SessionRecord, TokenRecord};

/// The PostgreSQL notification channel of credential changes.
pub(crate) const AUTH_CHANNEL: &str = "sr_auth";
/// Backstop age of an entry on PostgreSQL, where changes are notified.
pub(crate) const POSTGRES_MAX_AGE: Duration = Duration::from_secs(60);
/// Age of an entry on SQLite, bounding another process's unnotified write.
pub(crate) const SQLITE_MAX_AGE: Duration = Duration::from_secs(1);
/// Entries per kind; the cache is emptied when full (the hot set refills).
const CAPACITY: usize = 50_000;

/// What changed, as carried in a notification's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// One token (`t:<id>`).
    Token(ApiTokenId),
    /// Everything of one user: tokens and sessions (`u:<id>`).
    User(UserId),
    /// One session, by cookie hash (`s:<hash>`).
    Session(String),
    /// Anything: the whole cache.
    All,
}

impl Invalidation {
    /// The notification payload.
    pub(crate) fn payload(&self) -> String {
        match self {
            Self::Token(id) => format!("t:{id}"),
            Self::User(id) => format!("u:{id}"),
            Self::Session(hash) => format!("s:{hash}"),
            Self::All => "*".to_string(),
        }
    }

    /// Parses a payload; anything unknown empties the whole cache.
    pub(crate) fn parse(payload: &str) -> Self {
        let parsed = match payload.split_once(':') {
            Some(("t", id)) => id.parse().ok().map(Self::Token),
            Some(("u", id)) => id.parse().ok().map(Self::User),
            Some(("s", hash)) if !hash.is_empty() => Some(Self::Session(hash.to_string())),
            _ => None,
        };
        parsed.unwrap_or(Self::All)
    }
}

#[derive(Default)]
struct State {
    generation: u64,
    tokens: HashMap<ApiTokenId, (Instant, TokenRecord)>,
    sessions: HashMap<String, (Instant, SessionRecord)>,
}

/// The cache (see the module doc).
pub(crate) struct AuthCache {
    state: Mutex<State>,
    live: AtomicBool,
    max_age: Duration,
}

impl AuthCache {
    /// A cache whose entries live `max_age`; served only once `live`.
    pub(crate) fn new(live: bool, max_age: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            live: AtomicBool::new(live),
            max_age,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts or stops serving entries; either way the cache is emptied.
    pub(crate) fn set_live(&self, live: bool) {
        let mut state = self.state();
        self.live.store(live, Ordering::SeqCst);
        state.generation += 1;
        state.tokens.clear();
        state.sessions.clear();
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// The generation to pass to `put_*` after reading the database.
    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// A cached token record, if fresh.
    pub(crate) fn token(&self, id: ApiTokenId) -> Option<TokenRecord> {
        if !self.is_live() {
            return None;
        }
        let mut state = self.state();
        match state.tokens.get(&id) {
            Some((at, record)) if at.elapsed() < self.max_age => Some(record.clone()),
            Some(_) => {
                state.tokens.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Keeps a token record read at `generation`, unless something was
    /// invalidated since.
    pub(crate) fn put_token(&self, generation: u64, id: ApiTokenId, record: &TokenRecord) {
        if !self.is_live() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.tokens.len() >= CAPACITY {
            state.tokens.clear();
        }
        state.tokens.insert(id, (Instant::now(), record.clone()));
    }

    /// Claims the write of the token's use at `at`: `false` when the cached
    /// copy already holds a use less than `interval` ms before `at`, which
    /// another request has claimed (and is writing, or wrote). Each request
    /// checks its own copy of the record, taken before the claim, so
    /// without this every request in flight at the minute's turn wrote the
    /// same row (6 at once in a 1M-site benchmark run, 26-52 ms each,
    /// queued on the row's lock). The claim is recorded before the write:
    /// a write that then fails leaves the next one to a minute later, which
    /// a last-use time allows. A token not in the cache is always claimed.
    pub(crate) fn claim_touch(&self, id: ApiTokenId, at: i64, interval: i64) -> bool {
        match self.state().tokens.get_mut(&id) {
            Some((_, record)) if record.token.last_used_at.is_some_and(|t| at - t < interval) => {
                false
            }
            Some((_, record)) => {
                record.token.last_used_at = Some(at);
                true
            }
            None => true,
        }
    }

    /// A cached session, if fresh.
    pub(crate) fn session(&self, token_hash: &str) -> Option<SessionRecord> {
        if !self.is_live() {
            return None;
        }
        let mut state = self.state();
        match state.sessions.get(token_hash) {
            Some((at, record)) if at.elapsed() < self.max_age => Some(record.clone()),
            Some(_) => {
                state.sessions.remove(token_hash);
                None
            }
            None => None,
        }
    }

    /// Keeps a session read at `generation`, unless something was
    /// invalidated since.
    pub(crate) fn put_session(&self, generation: u64, token_hash: &str, record: &SessionRecord) {
        if !self.is_live() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.sessions.len() >= CAPACITY {
            state.sessions.clear();
        }
        state
            .sessions
            .insert(token_hash.to_string(), (Instant::now(), record.clone()));
    }

    /// Drops what `what` names.
    pub(crate) fn invalidate(&self, what: &Invalidation) {
        let mut state = self.state();
        state.generation += 1;
        match what {
            Invalidation::Token(id) => {
                state.tokens.remove(id);
            }
            Invalidation::User(user) => {
                state.tokens.retain(|_, (_, r)| r.token.user_id != *user);
                state.sessions.retain(|_, (_, r)| r.user_id != *user);
            }
            Invalidation::Session(hash) => {
                state.sessions.remove(hash);
            }
            Invalidation::All => {
                state.tokens.clear();
                state.sessions.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_roundtrip_and_unknown_ones_clear_everything() {
        let token = ApiTokenId::new();
        let user = UserId::new();
        for what in [
            Invalidation::Token(token),
            Invalidation::User(user),
            Invalidation::Session("ab12".into()),
            Invalidation::All,
        ] {
            assert_eq!(Invalidation::parse(&what.payload()), what);
        }
        for odd in ["", "t:", "t:not-a-uuid", "x:1", "s:", "garbage"] {
            assert_eq!(Invalidation::parse(odd), Invalidation::All, "{odd}");
        }
    }

    /// Of the requests that find a token's cached use a minute old, one
    /// writes the new use; the rest, and every request of the next minute,
    /// do not.
    #[test]
    fn a_token_use_is_written_by_one_request_a_minute() {
        use serviceradar_domain::policy::ScopeSet;
        use serviceradar_domain::resources::ApiToken;
        use serviceradar_domain::{TenantId, policy::Role};
        let cache = AuthCache::new(true, Duration::from_secs(60));
        let id = ApiTokenId::new();
        let record = TokenRecord {
            token: ApiToken {
                id,
                tenant_id: TenantId::new(),
                user_id: UserId::new(),
                name: "t".into(),
                scopes: ScopeSet::default(),
                created_at: 0,
                expires_at: i64::MAX,
                revoked_at: None,
                last_used_at: Some(1_000),
            },
            secret_hash: String::new(),
            role: Role::Viewer,
        };
        cache.put_token(cache.generation(), id, &record);
        let now = 1_000 + 60_000;
        let claims = (0..16)
            .filter(|_| cache.claim_touch(id, now, 60_000))
            .count();
        assert_eq!(claims, 1, "16 requests at the minute's turn");
        assert!(!cache.claim_touch(id, now + 59_999, 60_000));
        assert!(
            cache.claim_touch(id, now + 60_000, 60_000),
            "a minute later"
        );
        assert!(
            cache.claim_touch(ApiTokenId::new(), now, 60_000),
            "a token not in the cache"
        );
    }
}
