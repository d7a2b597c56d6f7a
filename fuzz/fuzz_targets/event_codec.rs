//! flumen's binary event codec (what the RocksDb channel stores) on any bytes: decoding never
//! panics nor allocates more than the input holds, and each decoded event encodes back to the
//! bytes it came from (less duplicate header keys) and decodes to itself.
#![no_main]

use bytes::Bytes;
use flumen::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    while !rest.is_empty() {
        let before = rest.len();
        let Ok(event) = Event::decode(&mut rest) else { return };
        let used = before - rest.len();
        let bytes = event.to_bytes();
        assert_eq!(bytes.len(), event.encoded_len());
        assert!(bytes.len() <= used, "re-encoded event is longer than its encoding");
        let mut again = bytes.clone();
        assert_eq!(Event::decode(&mut again), Ok(event));
        assert!(again.is_empty());
    }
});
