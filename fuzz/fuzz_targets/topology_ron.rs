//! The RON topology loader on any text: it answers a topology or located errors, never panics,
//! and every error names a line and column inside the text.
#![no_main]

use std::path::Path;

use flumen::topology::load_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = load_str(text, Path::new("fuzz.ron"), Path::new("/fuzz")) {
        let lines = text.split('\n').count();
        for e in &errors.0 {
            assert!(e.line <= lines, "error at line {} of a {lines}-line text: {}", e.line, e.message);
            let _ = e.to_string();
        }
    }
});
