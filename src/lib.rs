//! flumen: an actor-model event router in the manner of Apache Flume.
//!
//! An agent moves [`event::Event`]s from sources through channel selectors into channels, and
//! from channels into sinks, with put and take transactions so that nothing acknowledged is lost.
//! A topology (RON) describes one agent; [`topology`] loads and validates it and [`agent`] runs it.

pub mod agent;
pub mod blocking;
pub mod channel;
pub mod codec;
pub mod config;
pub mod event;
pub mod flume_import;
pub mod interceptor;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod monitoring;
pub mod secret;
pub mod selector;
pub mod service;
pub mod sink;
pub mod source;
pub mod supervision;
pub mod tap;
pub mod tls;
pub mod top;
pub mod topology;
