//! distls: move a live Erlang cluster from plain-TCP distribution to TLS distribution, one node at a time.
pub mod app;
pub mod argsfile;
pub mod atomic_file;
pub mod cli;
pub mod error;
pub mod flavor;
pub mod journal;
pub mod plan;
pub mod preflight;
pub mod preview;
pub mod probe;
pub mod progress;
pub mod rehearsal;
pub mod rollout;
pub mod ssh;
pub mod target;
pub mod transport;
