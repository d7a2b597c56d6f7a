//! Flume's Thrift RPC on the wire: the `ThriftSourceProtocol` of Flume's `flume.thrift`
//! (`append`, `appendBatch` of `ThriftFlumeEvent { headers, body }`, answering a `Status`) in the
//! compact or binary protocol over the framed transport. The `Thrift` source and sink use it.
