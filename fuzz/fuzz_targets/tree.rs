//! Tree blobs: `Tree::decode` on arbitrary bytes must not panic, and whatever decodes must
//! re-encode canonically: encoding sorts the entries, decoding that gives the same tree, and
//! encoding it again gives the same bytes (so the same blob id).

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::tree::{check_name, Tree};

fuzz_target!(|data: &[u8]| {
    let Ok(mut tree) = Tree::decode(data) else {
        return;
    };
    for e in &tree.entries {
        // Restore and verify gate every name through this before it touches the file system.
        let _ = check_name(&e.name);
        let _ = e.kind_str();
    }
    let bytes = tree.encode();
    let mut again = Tree::decode(&bytes).expect("an encoded tree decodes");
    assert_eq!(again, tree, "decode(encode(tree)) differs from the tree");
    assert_eq!(again.encode(), bytes, "encoding is not canonical");
    for e in &tree.entries {
        assert!(
            tree.get(&e.name).is_some_and(|found| found.name == e.name),
            "get() misses an entry of a sorted tree"
        );
    }
});
