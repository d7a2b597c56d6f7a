//! Flume's Avro RPC on the wire: the `AvroSourceProtocol` of Flume's `flume.avdl` (namespace
//! `org.apache.flume.source.avro`), the Avro IPC handshake, and Netty's framing of calls
//! (serial number, buffer count, length-prefixed buffers). The `Avro` source and sink use it.
