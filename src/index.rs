//! `index.sqlite`: a local cache mapping blob ids to where they sit in packs.
//!
//! The index is never the source of truth: every row can be rebuilt from pack trailers
//! (`vault reindex`), and packs are only added to it after they are durable on disk. Writes are
//! batched one transaction per pack; reads are batched too (the whole location map in one
//! query), so nothing on the hot path makes a SQLite round trip per chunk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::blob::{BlobKind, Compression};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::pack::PackEntry;

/// Bumped when the tables change; `Index::open` migrates older layouts in place. Version 4 added
/// `passes` (content-keyed checks that passed: see [`Index::has_passed`]). Version 3 dropped
/// the index of blobs by pack (43 bytes a row, a third of the file, used only to forget packs,
/// which now takes one scan for all of them); version 2 lets a blob sit in several packs (a
/// prune's repacked copy beside the original until the original is deleted); version 1 had the
/// blob id alone as key.
const SCHEMA_VERSION: i64 = 4;

/// Pack numbers per `DELETE ... IN (...)` statement (SQLite's default limit is 32,766 variables).
const DELETE_BATCH: usize = 500;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS packs(
    seq  INTEGER PRIMARY KEY,
    id   BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs(
    id          BLOB NOT NULL,
    pack        INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    compression INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    stored_len  INTEGER NOT NULL,
    raw_len     INTEGER NOT NULL,
    PRIMARY KEY (id, pack)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS passes(
    key BLOB PRIMARY KEY
) WITHOUT ROWID;
";

/// Where every indexed blob can be read, in 56 bytes a blob: one array of (id, slot) sorted by
/// id, sized once from the row count, with a table of where each leading-bits bucket starts (ids
/// are hashes, so buckets are even and a lookup searches a handful of entries). A pack is named
/// by its number in `packs` rather than by its 32-byte id. A hash map of the same entries took
/// about 100 bytes a blob at a million (load factor, and the doubling it was built by).
#[derive(Debug, Default)]
pub struct LocationMap {
    packs: Vec<PackId>,
    /// Sorted by id, one entry per id.
    entries: Vec<(BlobId, Slot)>,
    /// `starts[b]..starts[b + 1]` are the entries whose id's leading `bits` bits are `b`.
    starts: Vec<usize>,
    bits: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    stored_len: u32,
    raw_len: u32,
    pack: u32,
    kind: BlobKind,
    compression: Compression,
}

impl LocationMap {
    /// Builds the map from entries in any order; of the rows of one id (copies in several
    /// packs) the last is kept: rows come in `(id, pack seq)` order, so that is the newest copy,
    /// prune's repacked one, as the hash map this replaced kept by inserting in that order.
    fn build(packs: Vec<PackId>, mut entries: Vec<(BlobId, Slot)>) -> Self {
        // Rows come sorted from the index's primary key; sort only when they do not (a stable
        // sort, so the rows of one id keep their order).
        if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
            entries.sort_by_key(|e| e.0);
        }
        // `dedup_by` keeps the first of a run: move each later row into it.
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                *kept = *later;
            }
            same
        });
        // Shrinking copies the array: only worth it when copies or rows of no pack left much
        // room.
        if entries.capacity() - entries.len() > entries.len() / 8 {
            entries.shrink_to_fit();
        }
        // About four entries a bucket, at most 2^16 buckets (512 KiB of starts).
        let bits = (usize::BITS - (entries.len() / 4).leading_zeros()).min(16);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for b in 0..(1u32 << bits) {
            while i < entries.len() && Self::bucket(bits, &entries[i].0) < b {
                i += 1;
            }
            starts.push(i);
        }
        starts.push(entries.len());
        Self {
            packs,
            entries,
            starts,
            bits,
        }
    }

    fn bucket(bits: u32, id: &BlobId) -> u32 {
        if bits == 0 {
            return 0;
        }
        u32::from(u16::from_be_bytes([id.0[0], id.0[1]])) >> (16 - bits)
    }

    fn slot(&self, id: &BlobId) -> Option<&Slot> {
        let b = Self::bucket(self.bits, id) as usize;
        let (lo, hi) = (*self.starts.get(b)?, *self.starts.get(b + 1)?);
        let run = &self.entries[lo..hi];
        run.binary_search_by(|e| e.0.cmp(id))
            .ok()
            .map(|i| &run[i].1)
    }

    fn location(&self, id: &BlobId, s: &Slot) -> Location {
        Location {
            pack: self.packs[s.pack as usize],
            entry: PackEntry {
                id: *id,
                kind: s.kind,
                compression: s.compression,
                offset: s.offset,
                stored_len: s.stored_len,
                raw_len: s.raw_len,
            },
        }
    }

    pub fn get(&self, id: &BlobId) -> Option<Location> {
        self.slot(id).map(|s| self.location(id, s))
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.slot(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every blob id, in id order.
    pub fn ids(&self) -> impl Iterator<Item = &BlobId> {
        self.entries.iter().map(|e| &e.0)
    }

    /// Every location, in id order.
    pub fn iter(&self) -> impl Iterator<Item = Location> + '_ {
        self.entries.iter().map(|(id, s)| self.location(id, s))
    }
}

/// Where a blob can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub entry: PackEntry,
}

/// The SQLite index of one vault.
pub struct Index {
    conn: Connection,
    path: PathBuf,
    /// Opening created the tables (a new file, or one of an older layout).
    fresh: bool,
    /// Changes made through this connection (SQLite's `data_version` counts the others').
    local_changes: u64,
}

impl Index {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |source| Error::Index {
            path: path.into(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(err)?;
        let version =
            |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
        let mut fresh = false;
        if version(&conn).map_err(err)? != SCHEMA_VERSION {
            // An older layout (or a new file): start empty; the opener's reconcile refills it
            // from the trailers. One write transaction that looks again, so two processes
            // opening at once migrate once and a concurrent reader sees old or new.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(err)?;
            if version(&tx).map_err(err)? != SCHEMA_VERSION {
                let had_blobs: bool = tx
                    .query_row(
                        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'blobs'",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                let old = version(&tx).map_err(err)?;
                if had_blobs && old >= 2 {
                    // Versions 2 and 3 keep their rows; 2 loses its blobs-by-pack index.
                    tx.execute_batch("DROP INDEX IF EXISTS blobs_by_pack;")
                        .map_err(err)?;
                } else if had_blobs {
                    // Version 1 (one row per blob id): same columns, wider key; the rows move
                    // over in this transaction, so no reader ever sees the index empty.
                    tx.execute_batch(&format!(
                        "ALTER TABLE blobs RENAME TO blobs_v1; DROP INDEX IF EXISTS blobs_by_pack; \
                         {SCHEMA} \
                         INSERT OR IGNORE INTO blobs SELECT id, pack, kind, compression, offset, \
                         stored_len, raw_len FROM blobs_v1; DROP TABLE blobs_v1;"
                    ))
                    .map_err(err)?;
                } else {
                    fresh = true;
                }
                // The tables a new file lacks, or that were added since (all IF NOT EXISTS).
                tx.execute_batch(SCHEMA).map_err(err)?;
                tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
                    .map_err(err)?;
            }
            tx.commit().map_err(err)?;
        }
        Ok(Index {
            conn,
            path: path.into(),
            fresh,
            local_changes: 0,
        })
    }

    /// A value that differs whenever the index's content may have changed since it was last
    /// taken, by this connection or any other (a writer indexes packs on its own connection).
    pub fn version(&self) -> Result<(i64, u64)> {
        let theirs: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok((theirs, self.local_changes))
    }

    /// True when opening created the tables: the index is empty and needs a reconcile.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Index {
            path: self.path.clone(),
            source,
        }
    }

    /// Records a durable pack and all its blobs in one transaction.
    pub fn add_pack(&mut self, id: &PackId, size: u64, entries: &[PackEntry]) -> Result<()> {
        self.write(false, &[(*id, size, entries)])
    }

    /// Records several durable packs in one transaction (all or none of them).
    pub fn add_packs(&mut self, packs: &[(PackId, u64, &[PackEntry])]) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.write(false, packs)
    }

    /// Replaces every row with these packs in one transaction (`vault reindex`): a crash leaves
    /// the old index or the new one, never half of it.
    pub fn replace_all(&mut self, packs: &[(PackId, u64, &[PackEntry])]) -> Result<()> {
        self.write(true, packs)
    }

    fn write(&mut self, clear: bool, packs: &[(PackId, u64, &[PackEntry])]) -> Result<()> {
        self.local_changes += 1;
        let path = self.path.clone();
        let err = |source| Error::Index {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        if clear {
            tx.execute_batch("DELETE FROM blobs; DELETE FROM packs;")
                .map_err(err)?;
        }
        for (id, size, entries) in packs {
            tx.execute(
                "INSERT OR IGNORE INTO packs(id, size) VALUES (?1, ?2)",
                params![&id.0[..], *size as i64],
            )
            .map_err(err)?;
            let seq: i64 = tx
                .query_row("SELECT seq FROM packs WHERE id = ?1", [&id.0[..]], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO blobs(id, pack, kind, compression, offset, stored_len, raw_len)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            for e in entries.iter() {
                stmt.execute(params![
                    &e.id.0[..],
                    seq,
                    e.kind as u8,
                    e.compression as u8,
                    e.offset as i64,
                    e.stored_len,
                    e.raw_len
                ])
                .map_err(err)?;
            }
        }
        crate::crashpoint::io_fault(&self.path).map_err(|e| Error::io(&self.path, e))?;
        tx.commit().map_err(err)
    }

    /// Forgets a pack and its blobs (used when the pack file is gone). Copies of its blobs in
    /// other packs stay indexed.
    pub fn remove_pack(&mut self, id: &PackId) -> Result<()> {
        self.remove_packs(std::slice::from_ref(id))
    }

    /// Forgets packs and their blobs in one transaction. Blobs are not indexed by pack, so this
    /// scans the blob table once per [`DELETE_BATCH`] packs, whatever the number of packs.
    pub fn remove_packs(&mut self, ids: &[PackId]) -> Result<()> {
        self.local_changes += 1;
        let path = self.path.clone();
        let err = |source| Error::Index {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut seqs: Vec<i64> = Vec::with_capacity(ids.len());
        for id in ids {
            let seq: Option<i64> = tx
                .query_row("SELECT seq FROM packs WHERE id = ?1", [&id.0[..]], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(err)?;
            seqs.extend(seq);
        }
        for batch in seqs.chunks(DELETE_BATCH) {
            let marks = vec!["?"; batch.len()].join(",");
            let params = rusqlite::params_from_iter(batch.iter());
            tx.execute(
                &format!("DELETE FROM blobs WHERE pack IN ({marks})"),
                params.clone(),
            )
            .map_err(err)?;
            tx.execute(&format!("DELETE FROM packs WHERE seq IN ({marks})"), params)
                .map_err(err)?;
        }
        crate::crashpoint::io_fault(&self.path).map_err(|e| Error::io(&self.path, e))?;
        tx.commit().map_err(err)
    }

    /// Makes every committed change durable (a WAL checkpoint, which fsyncs): with
    /// `synchronous=NORMAL` a commit can be lost to a power cut, and prune must not delete pack
    /// files while rows pointing at them could come back.
    pub fn make_durable(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    /// Whether a check keyed by `key` passed before. The key names the check, its version and the
    /// exact content checked (see `gates::sanity`), so a pass recorded once holds for good; like
    /// every row here it is a cache, and an index rebuilt without it only checks again.
    pub fn has_passed(&self, key: &[u8; 32]) -> bool {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM passes WHERE key = ?1)",
                [&key[..]],
                |r| r.get(0),
            )
            .unwrap_or(false)
    }

    /// Records checks that passed, in one transaction.
    pub fn record_passes(&self, keys: &[[u8; 32]]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let err = |e| self.err(e);
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO passes(key) VALUES (?1)")
                .map_err(err)?;
            for k in keys {
                stmt.execute([&k[..]]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// True when no pack is indexed (one cheap query, for every open).
    pub fn is_empty(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM packs)", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Every indexed pack with its recorded size.
    pub fn packs(&self) -> Result<HashMap<PackId, u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, size FROM packs")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, size) = row.map_err(|e| self.err(e))?;
            let id =
                PackId::from_slice(&id).ok_or_else(|| self.corrupt("pack id is not 32 bytes"))?;
            out.insert(id, size as u64);
        }
        Ok(out)
    }

    fn corrupt(&self, reason: &str) -> Error {
        Error::corrupt(
            format!("index {}", self.path.display()),
            format!("{reason}; run `vault reindex`"),
        )
    }

    /// Calls `f` with every (pack, blob entry) row, copies of one blob in several packs included
    /// (prune's accounting).
    pub fn for_each_row(&self, mut f: impl FnMut(PackId, PackEntry)) -> Result<()> {
        let _snapshot = self.read_snapshot()?;
        let (packs, by_seq) = self.pack_numbers()?;
        self.query_rows(&by_seq, |n, entry| f(packs[n as usize], entry))
    }

    /// One read transaction: the packs and the blob rows are read from the same state of the
    /// index, whatever a writer commits meanwhile (a pack's `seq` may be reused once it is gone).
    fn read_snapshot(&self) -> Result<rusqlite::Transaction<'_>> {
        self.conn.unchecked_transaction().map_err(|e| self.err(e))
    }

    /// The location of every indexed blob, for restore and verify. A blob in several packs gets
    /// one of them.
    pub fn locations(&self) -> Result<LocationMap> {
        let _snapshot = self.read_snapshot()?;
        let (packs, by_seq) = self.pack_numbers()?;
        // Sized once: a vector grown by doubling holds both buffers at its last growth.
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        self.query_rows(&by_seq, |pack, e| {
            entries.push((
                e.id,
                Slot {
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    pack,
                    kind: e.kind,
                    compression: e.compression,
                },
            ));
        })?;
        Ok(LocationMap::build(packs, entries))
    }

    /// The packs' ids, and each pack's number in that list by its `seq`.
    fn pack_numbers(&self) -> Result<(Vec<PackId>, HashMap<i64, u32>)> {
        let bad = || self.corrupt("malformed pack row");
        let mut packs = Vec::new();
        let mut by_seq = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT seq, id FROM packs")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (seq, id) = row.map_err(|e| self.err(e))?;
            let n = u32::try_from(packs.len()).map_err(|_| bad())?;
            packs.push(PackId::from_slice(&id).ok_or_else(bad)?);
            by_seq.insert(seq, n);
        }
        Ok((packs, by_seq))
    }

    /// Calls `f` with every blob row whose pack is in `by_seq` (a row of a pack missing from the
    /// packs table is no location), with that pack's number.
    fn query_rows(
        &self,
        by_seq: &HashMap<i64, u32>,
        mut f: impl FnMut(u32, PackEntry),
    ) -> Result<()> {
        let mut stmt = self
            .conn
            // The primary key's order: the location map needs no sort.
            .prepare(
                "SELECT id, pack, kind, compression, offset, stored_len, raw_len FROM blobs \
                 ORDER BY id, pack",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    // Copied out without a heap allocation per row.
                    BlobId::from_slice(r.get_ref(0)?.as_blob()?),
                    r.get::<_, i64>(1)?,
                    r.get::<_, u8>(2)?,
                    r.get::<_, u8>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, u32>(6)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (id, seq, kind, comp, offset, stored_len, raw_len) =
                row.map_err(|e| self.err(e))?;
            let Some(&pack) = by_seq.get(&seq) else {
                continue;
            };
            let bad = || self.corrupt("malformed blob row");
            f(
                pack,
                PackEntry {
                    id: id.ok_or_else(bad)?,
                    kind: BlobKind::from_u8(kind).ok_or_else(bad)?,
                    compression: Compression::from_u8(comp).ok_or_else(bad)?,
                    offset: u64::try_from(offset).map_err(|_| bad())?,
                    stored_len,
                    raw_len,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_map_names_each_blobs_pack_and_skips_rows_of_no_pack() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let entry = |name: &[u8], offset| PackEntry {
            id: BlobId::of(name),
            kind: BlobKind::Tree,
            compression: Compression::None,
            offset,
            stored_len: 3,
            raw_len: 3,
        };
        let (a, b, c) = (entry(b"a", 0), entry(b"b", 3), entry(b"c", 0));
        let (p, q) = (PackId([1; 32]), PackId([2; 32]));
        idx.add_packs(&[(p, 6, &[a, b][..]), (q, 3, &[c][..])])
            .unwrap();
        // A row whose pack is not in the table.
        idx.conn
            .execute(
                "INSERT INTO blobs(id, pack, kind, compression, offset, stored_len, raw_len)
                 VALUES (?1, 999, 0, 0, 0, 1, 1)",
                [&[9u8; 32][..]],
            )
            .unwrap();
        let map = idx.locations().unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&a.id), Some(Location { pack: p, entry: a }));
        assert_eq!(map.get(&b.id), Some(Location { pack: p, entry: b }));
        assert_eq!(map.get(&c.id), Some(Location { pack: q, entry: c }));
        assert!(!map.contains(&BlobId([9; 32])));
        let mut ids: Vec<BlobId> = map.ids().copied().collect();
        ids.sort();
        let mut want = vec![a.id, b.id, c.id];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(map.iter().filter(|l| l.pack == p).count(), 2);
    }

    #[test]
    fn the_location_map_finds_every_id_in_any_order_and_keeps_the_newest_copy() {
        let slot = |pack: u32| Slot {
            offset: u64::from(pack),
            stored_len: 1,
            raw_len: 1,
            pack,
            kind: BlobKind::Data,
            compression: Compression::None,
        };
        let (p, q) = (PackId([1; 32]), PackId([2; 32]));
        for (n, sorted) in [
            (0usize, false),
            (1, false),
            (3, false),
            (100, true),
            (20_000, false),
        ]
        .into_iter()
        .chain([(20_000, true)])
        {
            let ids: Vec<BlobId> = (0..n).map(|i| BlobId::of(&i.to_le_bytes())).collect();
            // In the order of `i`, not of id; every tenth id in a second, later pack too.
            let mut rows = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                rows.push((*id, slot(0)));
                if i % 10 == 0 {
                    rows.push((*id, slot(1)));
                }
            }
            if sorted {
                rows.sort_by_key(|r| r.0);
            }
            let map = LocationMap::build(vec![p, q], rows);
            assert_eq!(map.len(), n);
            for (i, id) in ids.iter().enumerate() {
                let want = if i % 10 == 0 { q } else { p };
                assert_eq!(map.get(id).map(|l| l.pack), Some(want), "{id} among {n}");
            }
            for i in n..n + 1000 {
                assert!(!map.contains(&BlobId::of(&i.to_le_bytes())));
            }
            assert!(!map.contains(&BlobId([0; 32])) && !map.contains(&BlobId([0xff; 32])));
            let listed: Vec<&BlobId> = map.ids().collect();
            assert!(
                listed.windows(2).all(|w| w[0] < w[1]),
                "ids in order, once each"
            );
        }
    }

    #[test]
    fn version_moves_with_changes_from_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut a = Index::open(&path).unwrap();
        let mut b = Index::open(&path).unwrap();
        let e = PackEntry {
            id: BlobId::of(b"x"),
            kind: BlobKind::Data,
            compression: Compression::None,
            offset: 8,
            stored_len: 1,
            raw_len: 1,
        };
        let v0 = a.version().unwrap();
        assert_eq!(a.version().unwrap(), v0, "nothing changed");
        b.add_pack(&PackId([1; 32]), 10, &[e]).unwrap();
        let v1 = a.version().unwrap();
        assert_ne!(v1, v0, "another connection's commit shows");
        a.add_pack(&PackId([2; 32]), 10, &[e]).unwrap();
        assert_ne!(a.version().unwrap(), v1, "our own change shows");
    }

    #[test]
    fn passes_are_remembered_and_a_version_3_index_gains_their_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.sqlite");
        let v3_schema = &SCHEMA[..SCHEMA.find("CREATE TABLE IF NOT EXISTS passes").unwrap()];
        let conn = Connection::open(&path).unwrap();
        // A probe index on the blobs: it survives only if the table is kept, not copied.
        conn.execute_batch(&format!(
            "{v3_schema} CREATE INDEX probe ON blobs(raw_len); PRAGMA user_version = 3;"
        ))
        .unwrap();
        conn.execute(
            "INSERT INTO packs(id, size) VALUES (?1, 100)",
            [&[5u8; 32][..]],
        )
        .unwrap();
        drop(conn);
        let idx = Index::open(&path).unwrap();
        assert!(!idx.is_fresh(), "a version 3 index keeps its rows");
        let probe: i64 = idx
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'probe'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(probe, 1, "the blobs table is migrated in place, not copied");
        assert_eq!(idx.packs().unwrap().len(), 1);
        assert!(!idx.has_passed(&[1; 32]));
        idx.record_passes(&[[1; 32], [2; 32]]).unwrap();
        idx.record_passes(&[[1; 32]]).unwrap();
        drop(idx);
        let idx = Index::open(&path).unwrap();
        assert!(idx.has_passed(&[1; 32]) && idx.has_passed(&[2; 32]));
        assert!(!idx.has_passed(&[3; 32]));
    }

    #[test]
    fn add_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("index.sqlite")).unwrap();
        assert!(idx.is_fresh());
        assert!(idx.is_empty().unwrap());
        let e = PackEntry {
            id: BlobId::of(b"a"),
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            offset: 8,
            stored_len: 10,
            raw_len: 20,
        };
        let p = PackId([7; 32]);
        idx.add_pack(&p, 100, &[e]).unwrap();
        idx.add_pack(&p, 100, &[e]).unwrap();
        assert_eq!(idx.packs().unwrap()[&p], 100);
        assert!(idx.locations().unwrap().contains(&e.id));
        assert_eq!(
            idx.locations().unwrap().get(&e.id).unwrap(),
            Location { pack: p, entry: e }
        );
        // A copy of the blob in a second pack outlives the first pack.
        let q = PackId([8; 32]);
        idx.add_pack(&q, 50, &[e]).unwrap();
        let mut rows = 0;
        idx.for_each_row(|_, _| rows += 1).unwrap();
        assert_eq!(rows, 2);
        idx.remove_pack(&p).unwrap();
        assert_eq!(idx.locations().unwrap().get(&e.id).unwrap().pack, q);
        idx.remove_pack(&q).unwrap();
        assert!(idx.locations().unwrap().is_empty());
        // Reopening keeps the rows; an index of an older layout starts over.
        idx.add_pack(&p, 100, &[e]).unwrap();
        drop(idx);
        let idx = Index::open(&dir.path().join("index.sqlite")).unwrap();
        assert!(!idx.is_fresh());
        assert!(!idx.is_empty().unwrap());
        assert_eq!(idx.packs().unwrap().len(), 1);
        drop(idx);
        // A version 1 index (blob id alone as key) is migrated in place, rows and all.
        let v1 = dir.path().join("v1.sqlite");
        let conn = Connection::open(&v1).unwrap();
        conn.execute_batch(
            "CREATE TABLE packs(seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
             CREATE TABLE blobs(id BLOB PRIMARY KEY, pack INTEGER NOT NULL, kind INTEGER NOT NULL,
                 compression INTEGER NOT NULL, offset INTEGER NOT NULL, stored_len INTEGER NOT NULL,
                 raw_len INTEGER NOT NULL) WITHOUT ROWID;
             CREATE INDEX blobs_by_pack ON blobs(pack);",
        )
        .unwrap();
        conn.execute("INSERT INTO packs(id, size) VALUES (?1, 100)", [&p.0[..]])
            .unwrap();
        conn.execute(
            "INSERT INTO blobs VALUES (?1, 1, 0, 1, 8, 10, 20)",
            [&e.id.0[..]],
        )
        .unwrap();
        drop(conn);
        let mut idx = Index::open(&v1).unwrap();
        assert!(!idx.is_fresh());
        assert_eq!(
            idx.locations().unwrap().get(&e.id).unwrap(),
            Location { pack: p, entry: e }
        );
        idx.add_pack(&q, 50, &[e]).unwrap();
        let mut rows = 0;
        idx.for_each_row(|_, _| rows += 1).unwrap();
        assert_eq!(rows, 2, "the migrated table takes a second copy");
        drop(idx);
        // A version 2 index loses its blobs-by-pack index and keeps its rows.
        let v2 = dir.path().join("v2.sqlite");
        let conn = Connection::open(&v2).unwrap();
        conn.execute_batch(&format!(
            "{SCHEMA} CREATE INDEX blobs_by_pack ON blobs(pack); PRAGMA user_version = 2;"
        ))
        .unwrap();
        conn.execute("INSERT INTO packs(id, size) VALUES (?1, 100)", [&p.0[..]])
            .unwrap();
        conn.execute(
            "INSERT INTO blobs VALUES (?1, 1, 0, 1, 8, 10, 20)",
            [&e.id.0[..]],
        )
        .unwrap();
        drop(conn);
        let mut idx = Index::open(&v2).unwrap();
        assert!(!idx.is_fresh());
        let indexes: i64 = idx
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'blobs_by_pack'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        assert_eq!(idx.locations().unwrap().get(&e.id).unwrap().pack, p);
        // Several packs go in one call; unknown ones are ignored.
        idx.add_pack(&q, 50, &[e]).unwrap();
        let r = PackId([9; 32]);
        let f = PackEntry {
            id: BlobId::of(b"f"),
            ..e
        };
        idx.add_pack(&r, 70, &[f]).unwrap();
        idx.remove_packs(&[p, q, PackId([1; 32])]).unwrap();
        assert_eq!(idx.packs().unwrap().len(), 1);
        let mut left = Vec::new();
        idx.for_each_row(|pack, entry| left.push((pack, entry.id)))
            .unwrap();
        assert_eq!(left, vec![(r, f.id)]);
    }
}
