//! Clients' idempotency keys for the records the server numbers itself (declarations and
//! notices; cases, samples and doses carry their own ids). A phone that sends a declaration and
//! loses the answer sends it again: with the same key, it gets the record stored the first time
//! instead of a second one.
//!
//! A key is stored with its record, in the same transaction (table `client_keys`), under its
//! scope: the kind of record and the caller's name, so that two callers' keys never meet. It
//! holds the record's id and the request as it was first sent (postcard), so that a key sent
//! again with another request is refused (a client bug that would otherwise lose the second
//! request silently). Keys are kept at least [`CLIENT_KEY_KEEP_S`] and dropped by the daily
//! purge after that.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;

/// The longest key taken, in bytes.
pub const MAX_CLIENT_KEY_BYTES: usize = 255;
/// How long a key is kept at least, seconds.
pub const CLIENT_KEY_KEEP_S: i64 = 86_400;

/// Keys by `kind \n caller \n key` (postcard [`KeyedRecord`]).
pub(crate) const CLIENT_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("client_keys");

/// A client's key for one request, with the name of the caller that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    caller: String,
    key: String,
}

impl ClientKey {
    /// `key` as `caller` sent it: 1 to [`MAX_CLIENT_KEY_BYTES`] visible ASCII characters (a UUID
    /// is the usual choice).
    pub fn new(caller: &str, key: &str) -> Result<ClientKey> {
        if key.is_empty()
            || key.len() > MAX_CLIENT_KEY_BYTES
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::Invalid(format!(
                "an idempotency key must be 1-{MAX_CLIENT_KEY_BYTES} visible ASCII characters"
            )));
        }
        Ok(ClientKey {
            caller: caller.to_string(),
            key: key.to_string(),
        })
    }

    fn row(&self, kind: RecordKind) -> String {
        format!("{}\n{}\n{}", kind.as_str(), self.caller, self.key)
    }
}

/// The records a key can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Declaration,
    Notice,
}

impl RecordKind {
    fn as_str(self) -> &'static str {
        match self {
            RecordKind::Declaration => "declaration",
            RecordKind::Notice => "notice",
        }
    }
}

/// What the table holds for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyedRecord {
    /// The id of the record the key's first request stored.
    pub(crate) id: String,
    /// That request, postcard-encoded as the domain received it (before any default was filled).
    pub(crate) request: Vec<u8>,
    /// The domain's time when it was stored.
    pub(crate) stored_at: i64,
}

/// A request that carries a key, ready to be looked up and stored.
pub(crate) struct Keyed {
    row: String,
    request: Vec<u8>,
}

impl Keyed {
    /// `key` for a request of `kind` whose fields are `request`.
    pub(crate) fn new<R: Serialize>(
        key: &ClientKey,
        kind: RecordKind,
        request: &R,
    ) -> Result<Keyed> {
        let request =
            postcard::to_allocvec(request).map_err(|e| Error::store("encoding a request", e))?;
        Ok(Keyed {
            row: key.row(kind),
            request,
        })
    }

    /// The id of the record stored for this key, if the key was used before for the same
    /// request; a `Conflict` if it was used for another.
    pub(crate) fn stored(&self, store: &Store) -> Result<Option<String>> {
        match store.get::<KeyedRecord>(CLIENT_KEYS, &self.row)? {
            None => Ok(None),
            Some(r) if r.request == self.request => Ok(Some(r.id)),
            Some(r) => Err(Error::Conflict(format!(
                "this idempotency key was used for another request (which stored {}); send a \
                 new key with each new request",
                r.id
            ))),
        }
    }

    /// What a retry of a keyed request gets back: the record stored for its key, while `held`
    /// still holds it; `None` without a key, for a new key, or for a record purged since.
    pub(crate) fn replay<T: Clone>(
        keyed: Option<&Keyed>,
        store: &Store,
        held: &BTreeMap<String, T>,
    ) -> Result<Option<T>> {
        let Some(keyed) = keyed else {
            return Ok(None);
        };
        Ok(keyed.stored(store)?.and_then(|id| held.get(&id).cloned()))
    }

    /// The row (key, encoded value) to store beside the record `id`.
    pub(crate) fn into_row(self, id: &str, now: i64) -> Result<(String, Vec<u8>)> {
        let value = postcard::to_allocvec(&KeyedRecord {
            id: id.to_string(),
            request: self.request,
            stored_at: now,
        })
        .map_err(|e| Error::store("encoding a key", e))?;
        Ok((self.row, value))
    }
}

/// Drops the keys stored before `now - CLIENT_KEY_KEEP_S`; returns how many.
pub(crate) fn purge(store: &Store, now: i64) -> Result<usize> {
    let cutoff = now.saturating_sub(CLIENT_KEY_KEEP_S);
    let old: Vec<String> = store
        .rows::<KeyedRecord>(CLIENT_KEYS)?
        .into_iter()
        .filter(|(_, r)| r.stored_at < cutoff)
        .map(|(k, _)| k)
        .collect();
    if !old.is_empty() {
        store.delete_all(CLIENT_KEYS, old.iter().map(String::as_str))?;
    }
    Ok(old.len())
}
