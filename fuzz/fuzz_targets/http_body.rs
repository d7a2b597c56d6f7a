//! The `Http` source's body formats on any body: decoding never panics, and what decodes writes
//! back (`Format::encode`, as the `Http` sink sends it) into a body that decodes to the same
//! events. Byte 0 picks the format (FlumeJson, Ndjson, Lines, Events); the rest is the body.
#![no_main]

use bytes::Bytes;
use flumen::codec::Format;
use libfuzzer_sys::fuzz_target;

const FORMATS: [Format; 4] = [Format::FlumeJson, Format::Ndjson, Format::Lines, Format::Events];

fuzz_target!(|data: &[u8]| {
    let [pick, body @ ..] = data else { return };
    let format = FORMATS[usize::from(*pick) % FORMATS.len()];
    let Ok(events) = format.decode(Bytes::copy_from_slice(body)) else { return };
    if format == Format::Lines {
        // Bodies only, one per line: the line endings themselves are the format's.
        assert!(events.iter().all(|e| !e.body.contains(&b'\n')));
        return;
    }
    let again = format.decode(format.encode(&events)).expect("an encoded body decodes");
    assert_eq!(again, events, "{format:?} does not write back what it read");
});
