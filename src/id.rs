//! Identifiers: one newtype per kind of id, parsed once at the edge.
//!
//! `BlobId` addresses a chunk or a tree blob (blake3 of its plaintext), `PackId` a pack file
//! (blake3 of the pack's bytes) and `SnapshotId` a manifest (sha256 of its canonical bytes). All
//! render as 64 lowercase hex digits, which is also how they are named on disk.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex, as used in object names.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, for humans.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
                    return Err(Error::Invalid(format!(
                        "{} is not a valid {} (64 hex digits)",
                        s,
                        stringify!($name)
                    )));
                }
                Ok(Self(out))
            }

            /// Builds an id from a slice that must be 32 bytes long.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                b.try_into().ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).map_err(D::Error::custom)
                } else {
                    let b: serde_bytes_array::Bytes32 = Deserialize::deserialize(d)?;
                    Ok(Self(b.0))
                }
            }
        }
    };
}

hex_id!(
    /// Address of a blob (file chunk or tree): blake3 of its plaintext.
    BlobId
);
hex_id!(
    /// Address of a pack file: blake3 of the whole pack.
    PackId
);
hex_id!(
    /// Address of a snapshot manifest: sha256 of its canonical bytes.
    SnapshotId
);

impl BlobId {
    /// Hashes plaintext into its blob id.
    pub fn of(data: &[u8]) -> Self {
        BlobId(*blake3::hash(data).as_bytes())
    }
}

/// A set of blob ids that grows to millions at about 32 bytes an id: a sorted array, and a hash
/// set of the ids added since it was last folded into the array (at most an eighth of the
/// array's length, or [`IdSet::RECENT_MIN`]). A hash set of a million ids takes 69 MB, and 104
/// while it doubles; this takes 32, and about 13 more for the recent ones at the last fold.
/// Folding merges from the back, in place, so the array only ever grows by `reserve_exact`.
#[derive(Debug, Default, Clone)]
pub struct IdSet {
    sorted: Vec<BlobId>,
    recent: std::collections::HashSet<BlobId>,
}

impl IdSet {
    /// Ids kept in the hash set before a fold, however small the array.
    pub const RECENT_MIN: usize = 1 << 16;

    pub fn contains(&self, id: &BlobId) -> bool {
        self.recent.contains(id) || self.sorted.binary_search(id).is_ok()
    }

    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: BlobId) -> bool {
        if self.sorted.binary_search(&id).is_ok() || !self.recent.insert(id) {
            return false;
        }
        if self.recent.len() >= (self.sorted.len() / 8).max(Self::RECENT_MIN) {
            self.fold();
        }
        true
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every id, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &BlobId> {
        self.sorted.iter().chain(self.recent.iter())
    }

    fn fold(&mut self) {
        let mut tail: Vec<BlobId> = self.recent.drain().collect();
        tail.sort_unstable();
        let old = self.sorted.len();
        self.sorted.reserve_exact(tail.len());
        self.sorted.resize(old + tail.len(), BlobId([0; 32]));
        // Merge from the back: every write lands past the unread part of `sorted`.
        let (mut i, mut j) = (old, tail.len());
        for k in (0..old + tail.len()).rev() {
            if j == 0 {
                break;
            }
            if i > 0 && self.sorted[i - 1] > tail[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = tail[j - 1];
                j -= 1;
            }
        }
    }
}

impl Extend<BlobId> for IdSet {
    fn extend<I: IntoIterator<Item = BlobId>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

mod serde_bytes_array {
    use serde::de::{Error, Visitor};
    use serde::{Deserialize, Deserializer};

    /// Exactly 32 bytes, from a binary serializer.
    pub struct Bytes32(pub [u8; 32]);

    impl<'de> Deserialize<'de> for Bytes32 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes32;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("32 bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes32, E> {
                    v.try_into()
                        .map(Bytes32)
                        .map_err(|_| E::invalid_length(v.len(), &self))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_set_holds_what_was_inserted_across_folds() {
        let id = |i: usize| BlobId::of(&i.to_le_bytes());
        let mut set = IdSet::default();
        let n = IdSet::RECENT_MIN * 3 + 17;
        for i in 0..n {
            assert!(set.insert(id(i)), "{i} is new");
            // Inserted again at once, and again after folds.
            assert!(!set.insert(id(i)));
            if i % 1000 == 0 {
                assert!(!set.insert(id(i / 2)));
            }
        }
        assert_eq!(set.len(), n);
        assert!(set.sorted.len() >= IdSet::RECENT_MIN * 3, "it folded");
        assert!(
            set.sorted.windows(2).all(|w| w[0] < w[1]),
            "the array is sorted, once each"
        );
        assert!((0..n).all(|i| set.contains(&id(i))));
        assert!((n..n + 10_000).all(|i| !set.contains(&id(i))));
    }

    #[test]
    fn hex_round_trip() {
        let id = BlobId::of(b"hello");
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(BlobId::from_hex("zz").is_err());
        assert!(BlobId::from_hex(&"g".repeat(64)).is_err());
    }
}
