//! The name server's durable record store: a [redb] file.
//!
//! Tables:
//! * `records`: name → the encoded [`SignedRecord`] last registered for it;
//! * `records_by_expiry`: (expires, name) → (), so lapsed records are found without a scan;
//! * `names_per_key`: signing key → how many names it holds, for the per-key quota;
//! * `meta`: `schema` → 2 once the two indexes above are built. A file written before they
//!   existed (schema 1, no `meta` entry) gets them rebuilt from `records` when opened.
//!
//! Each registration is one write transaction that reads the current record, applies the
//! rules ([`NameRules::check_update`]), the per-key quota and the cap on stored names, and
//! stores the new record with its index entries, committed with immediate durability
//! (it waits for `fsync`) before the client hears `Ok`.
//!
//! A record whose expiry plus the grace period has passed is *lapsed*: its name is free,
//! and `Store::collect_garbage` deletes it (the server runs it periodically, and a
//! registration that finds the store full runs it first). Every function takes the time
//! (`now`, Unix seconds), so tests play days and weeks in a moment.
//!
//! [redb]: https://docs.rs/redb

use std::path::Path;

use msocket::name::{validate_name, NameError, NameRules, SignedRecord};
use redb::{
    Database, Durability, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    Table, TableDefinition,
};

use super::NameServerError;

/// Name → encoded `SignedRecord`.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// (expires, name) → (): the records in the order they lapse.
const BY_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("records_by_expiry");
/// Signing key → how many names it holds (absent: none).
const KEY_NAMES: TableDefinition<&[u8; 32], u64> = TableDefinition::new("names_per_key");
/// Bookkeeping: `schema`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA: u64 = 2;

/// How many lapsed records one garbage-collection transaction deletes at most, so that
/// registrations never wait long behind it.
pub const GC_BATCH: usize = 1000;

/// The limits a store applies on top of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// The most names one signing key may hold.
    pub names_per_key: u64,
    /// The most names the store holds.
    pub max_names: u64,
}

/// Default for [`StoreLimits::names_per_key`].
pub const NAMES_PER_KEY: u64 = 32;
/// Default for [`StoreLimits::max_names`].
pub const MAX_NAMES: u64 = 1_000_000;

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { names_per_key: NAMES_PER_KEY, max_names: MAX_NAMES }
    }
}

/// The record store.
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
    pub(crate) rules: NameRules,
    pub(crate) limits: StoreLimits,
}

fn store_error(e: impl Into<redb::Error>) -> NameError {
    NameError::Store(e.into().to_string())
}

pub(crate) fn decode_stored(name: &str, bytes: &[u8]) -> Result<SignedRecord, NameError> {
    SignedRecord::decode(bytes)
        .map_err(|e| NameError::Store(format!("stored record for {name:?} is unreadable: {e}")))
}

/// What a successful registration changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registered {
    /// The name had no record (or a lapsed one of the same key).
    NewName,
    /// The key's record was replaced by a newer one.
    Updated,
    /// The name had lapsed under another key and now belongs to this one.
    TakenOver,
}

impl Store {
    /// Opens the database at `path`, creating the file and its tables if needed, and
    /// building the indexes of a file written before they existed.
    pub(crate) fn open(path: &Path) -> Result<Store, NameServerError> {
        let open_error =
            |e: redb::Error| NameServerError::Open { path: path.display().to_string(), source: e };
        let db = Database::create(path).map_err(|e| open_error(e.into()))?;
        let txn = db.begin_write().map_err(|e| open_error(e.into()))?;
        let rebuilt = {
            // Create the tables up front so readers never meet a missing table.
            let records = txn.open_table(RECORDS).map_err(|e| open_error(e.into()))?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(|e| open_error(e.into()))?;
            let mut key_names = txn.open_table(KEY_NAMES).map_err(|e| open_error(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| open_error(e.into()))?;
            let schema = meta.get("schema").map_err(|e| open_error(e.into()))?.map(|v| v.value());
            if schema == Some(SCHEMA) {
                None
            } else {
                let n = rebuild_indexes(&records, &mut by_expiry, &mut key_names)
                    .map_err(|e| NameServerError::Index { path: path.display().to_string(), reason: e.to_string() })?;
                meta.insert("schema", SCHEMA).map_err(|e| open_error(e.into()))?;
                Some(n)
            }
        };
        txn.commit().map_err(|e| open_error(e.into()))?;
        if let Some(n) = rebuilt {
            tracing::info!(records = n, "name database indexes built");
        }
        Ok(Store { db, rules: NameRules::default(), limits: StoreLimits::default() })
    }

    /// Applies the rules, the quota and the cap to `offered` and stores it, durably.
    /// Blocking.
    pub(crate) fn register(&self, offered: &SignedRecord, now: u64) -> Result<Registered, NameError> {
        let name = offered.record.name.as_str();
        let key = &offered.record.signing_key;
        let mut txn = self.db.begin_write().map_err(store_error)?;
        txn.set_durability(Durability::Immediate).map_err(store_error)?;
        let registered = {
            let mut records = txn.open_table(RECORDS).map_err(store_error)?;
            let current = match records.get(name).map_err(store_error)? {
                Some(stored) => Some(decode_stored(name, stored.value())?),
                None => None,
            };
            // On refusal the transaction is dropped uncommitted, which aborts it.
            self.rules.check_update(current.as_ref(), offered, now)?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(store_error)?;
            let mut key_names = txn.open_table(KEY_NAMES).map_err(store_error)?;
            let registered = match &current {
                Some(c) if c.record.signing_key == *key => Registered::Updated,
                Some(_) => Registered::TakenOver,
                None => Registered::NewName,
            };
            let held = |key_names: &Table<&[u8; 32], u64>| -> Result<u64, NameError> {
                Ok(key_names.get(key).map_err(store_error)?.map_or(0, |v| v.value()))
            };
            let over_quota = |key_names: &Table<&[u8; 32], u64>| -> Result<bool, NameError> {
                Ok(registered != Registered::Updated && held(key_names)? >= self.limits.names_per_key)
            };
            let full = |records: &Table<&str, &[u8]>| -> Result<bool, NameError> {
                Ok(registered == Registered::NewName && records.len().map_err(store_error)? >= self.limits.max_names)
            };
            if over_quota(&key_names)? || full(&records)? {
                // Lapsed names count until they are deleted: delete them now, then look again.
                let freed = collect_in(&mut records, &mut by_expiry, &mut key_names, &self.rules, now, GC_BATCH, Some(name))?;
                if freed > 0 {
                    tracing::info!(deleted = freed, "lapsed names deleted to make room");
                }
                if over_quota(&key_names)? {
                    return Err(NameError::QuotaExceeded { max: self.limits.names_per_key });
                }
                if full(&records)? {
                    return Err(NameError::ServerFull { max: self.limits.max_names });
                }
            }
            match &current {
                Some(c) => {
                    by_expiry.remove((c.record.expires, name)).map_err(store_error)?;
                    if registered == Registered::TakenOver {
                        count_name(&mut key_names, &c.record.signing_key, -1)?;
                        count_name(&mut key_names, key, 1)?;
                    }
                }
                None => count_name(&mut key_names, key, 1)?,
            }
            by_expiry.insert((offered.record.expires, name), ()).map_err(store_error)?;
            records.insert(name, offered.encode().as_slice()).map_err(store_error)?;
            registered
        };
        txn.commit().map_err(store_error)?;
        Ok(registered)
    }

    /// The verified record registered under `name`. Blocking.
    pub(crate) fn lookup(&self, name: &str, now: u64) -> Result<SignedRecord, NameError> {
        validate_name(name)?;
        let txn = self.db.begin_read().map_err(store_error)?;
        let table = txn.open_table(RECORDS).map_err(store_error)?;
        let stored = table.get(name).map_err(store_error)?;
        let record = match stored {
            Some(bytes) => decode_stored(name, bytes.value())?,
            None => return Err(NameError::NotFound(name.to_string())),
        };
        // Stored records verified when registered; this re-check catches expiry.
        record.verify(now)?;
        Ok(record)
    }

    /// Deletes up to `limit` lapsed records (expiry plus grace passed at `now`), durably;
    /// returns how many. Blocking.
    pub(crate) fn collect_garbage(&self, now: u64, limit: usize) -> Result<usize, NameError> {
        let mut txn = self.db.begin_write().map_err(store_error)?;
        txn.set_durability(Durability::Immediate).map_err(store_error)?;
        let deleted = {
            let mut records = txn.open_table(RECORDS).map_err(store_error)?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(store_error)?;
            let mut key_names = txn.open_table(KEY_NAMES).map_err(store_error)?;
            collect_in(&mut records, &mut by_expiry, &mut key_names, &self.rules, now, limit, None)?
        };
        if deleted == 0 {
            // Nothing changed: no need to wait for a commit.
            txn.abort().map_err(store_error)?;
        } else {
            txn.commit().map_err(store_error)?;
        }
        Ok(deleted)
    }

    /// How many names are stored.
    pub(crate) fn len(&self) -> Result<u64, NameError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let table = txn.open_table(RECORDS).map_err(store_error)?;
        table.len().map_err(store_error)
    }

    /// How many names `key` holds.
    pub(crate) fn names_of(&self, key: &[u8; 32]) -> Result<u64, NameError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let table = txn.open_table(KEY_NAMES).map_err(store_error)?;
        Ok(table.get(key).map_err(store_error)?.map_or(0, |v| v.value()))
    }

    /// Writes raw bytes under `name`, bypassing every check (tests of damaged files).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, name: &str, bytes: &[u8]) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(RECORDS).unwrap().insert(name, bytes).unwrap();
        txn.commit().unwrap();
    }

    /// Forgets the schema marker, as in a file written before the indexes existed.
    #[cfg(test)]
    pub(crate) fn drop_indexes(&self) {
        let txn = self.db.begin_write().unwrap();
        txn.delete_table(BY_EXPIRY).unwrap();
        txn.delete_table(KEY_NAMES).unwrap();
        txn.delete_table(META).unwrap();
        txn.commit().unwrap();
    }
}

/// Adds `delta` (±1) to `key`'s count of names, removing the entry at zero.
fn count_name(table: &mut Table<&[u8; 32], u64>, key: &[u8; 32], delta: i64) -> Result<(), NameError> {
    let held = table.get(key).map_err(store_error)?.map_or(0, |v| v.value());
    let now_held = held.saturating_add_signed(delta);
    if now_held == 0 {
        table.remove(key).map_err(store_error)?;
    } else {
        table.insert(key, now_held).map_err(store_error)?;
    }
    Ok(())
}

/// Deletes up to `limit` lapsed records inside a write transaction, all but `spare` (the
/// name a registration is replacing, whose record it handles itself).
#[allow(clippy::too_many_arguments)]
fn collect_in(
    records: &mut Table<&str, &[u8]>,
    by_expiry: &mut Table<(u64, &str), ()>,
    key_names: &mut Table<&[u8; 32], u64>,
    rules: &NameRules,
    now: u64,
    limit: usize,
    spare: Option<&str>,
) -> Result<usize, NameError> {
    // Lapsed: expires + grace <= now, that is expires <= now - grace.
    let Some(cutoff) = now.checked_sub(rules.grace.as_secs()) else { return Ok(0) };
    let mut lapsed = Vec::new();
    let upper = (cutoff.saturating_add(1), "");
    for entry in by_expiry.range::<(u64, &str)>(..upper).map_err(store_error)? {
        if lapsed.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(store_error)?;
        let (expires, name) = key.value();
        if spare != Some(name) {
            lapsed.push((expires, name.to_string()));
        }
    }
    let mut deleted = 0;
    for (expires, name) in lapsed {
        by_expiry.remove((expires, name.as_str())).map_err(store_error)?;
        let current = match records.get(name.as_str()).map_err(store_error)? {
            Some(stored) => decode_stored(&name, stored.value()),
            None => continue,
        };
        match current {
            // The index entry is the record's own: it has lapsed.
            Ok(record) if record.record.expires == expires && rules.is_lapsed(&record.record, now) => {
                records.remove(name.as_str()).map_err(store_error)?;
                count_name(key_names, &record.record.signing_key, -1)?;
                tracing::debug!(%name, key = %record.record.public().fingerprint(), "lapsed name deleted");
                deleted += 1;
            }
            // A stale index entry (cannot happen through `register`): dropping it was all.
            Ok(_) => {}
            Err(e) => tracing::warn!(%name, error = %e, "unreadable record left in place"),
        }
    }
    Ok(deleted)
}

/// Rebuilds `records_by_expiry` and `names_per_key` from `records`; returns how many
/// records were indexed. Unreadable records are logged and left unindexed.
fn rebuild_indexes(
    records: &Table<&str, &[u8]>,
    by_expiry: &mut Table<(u64, &str), ()>,
    key_names: &mut Table<&[u8; 32], u64>,
) -> Result<u64, redb::Error> {
    by_expiry.retain(|_, ()| false)?;
    key_names.retain(|_, _| false)?;
    let mut indexed = 0;
    for entry in records.iter()? {
        let (name, bytes) = entry?;
        let name = name.value();
        match decode_stored(name, bytes.value()) {
            Ok(record) => {
                by_expiry.insert((record.record.expires, name), ())?;
                let key = &record.record.signing_key;
                let held = key_names.get(key)?.map_or(0, |v| v.value());
                key_names.insert(key, held + 1)?;
                indexed += 1;
            }
            Err(e) => tracing::warn!(%name, error = %e, "unreadable record not indexed"),
        }
    }
    Ok(indexed)
}
