// Flume's Thrift RPC, written for flumen's tests from the wire format of Apache Flume's
// flume-ng-sdk/src/main/thrift/flume.thrift: the same field ids and types, the same enum values,
// the same method names, so that code generated from it talks to Flume and to flumen alike.

namespace java org.apache.flume.thrift
namespace py flume

// One event: its headers and its body.
struct ThriftFlumeEvent {
  1: required map<string, string> headers,
  2: required binary body,
}

// What a call answers: OK = 0 once the events are committed, FAILED = 1 when they were not.
enum Status {
  OK,
  FAILED,
  ERROR,
  UNKNOWN
}

service ThriftSourceProtocol {
  Status append(1: ThriftFlumeEvent event),
  Status appendBatch(1: list<ThriftFlumeEvent> events),
}
