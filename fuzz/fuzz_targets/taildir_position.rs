//! The Taildir position file parser on any contents: it answers positions or a format error,
//! never panics, and what it reads writes back (as `store` does) into contents it reads the same.
#![no_main]

use std::path::Path;

use flumen::source::taildir::position::{parse, Position};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/taildir.positions");
    let Ok(positions) = parse(data, path) else { return };
    let list: Vec<Position> = positions.values().cloned().collect();
    // As `store` writes them.
    let json = serde_json::to_vec(&list).expect("positions serialize");
    let again = parse(&json, path).expect("written positions read back");
    assert_eq!(again, positions);
});
