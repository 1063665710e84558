//! Tree blobs: `StoredTree::decode` and `resolve` on arbitrary bytes must not panic (every list
//! blob holds the same 64 ids, so hostile patches run against a real base), and whatever
//! resolves must re-encode canonically: encoding sorts the entries, decoding that gives the same
//! tree and lists, and encoding it again gives the same bytes (so the same blob id).

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::id::BlobId;
use atlasvault::tree::{check_name, StoredTree, Tree};

fuzz_target!(|data: &[u8]| {
    let base: Vec<BlobId> = (0..64u8).map(|i| BlobId([i; 32])).collect();
    let load = |_: &BlobId| -> Result<Vec<BlobId>, String> { Ok(base.clone()) };
    let _ = Tree::decode(data);
    let Ok(stored) = StoredTree::decode(data) else {
        return;
    };
    let Ok((mut tree, lists)) = stored.resolve(load) else {
        return;
    };
    for e in &tree.entries {
        // Restore and verify gate every name through this before it touches the file system.
        let _ = check_name(&e.name);
        let _ = e.kind_str();
    }
    let mut names: Vec<&[u8]> = tree.entries.iter().map(|e| e.name.as_slice()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        // Two entries of one name (verify reports it) share one list by name: not canonical.
        return;
    }
    let bytes = tree.encode_with(&lists);
    let (mut again, again_lists) = StoredTree::decode(&bytes)
        .expect("an encoded tree decodes")
        .resolve(load)
        .expect("an encoded tree resolves");
    assert_eq!(again, tree, "decode(encode(tree)) differs from the tree");
    assert_eq!(again_lists, lists, "decode(encode(tree)) has other lists");
    assert_eq!(again.encode_with(&lists), bytes, "encoding is not canonical");
    for e in &tree.entries {
        assert!(
            tree.get(&e.name).is_some_and(|found| found.name == e.name),
            "get() misses an entry of a sorted tree"
        );
    }
});
