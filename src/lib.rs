//! distls: move a live Erlang cluster from plain-TCP distribution to TLS distribution, one node at a time.
pub mod argsfile;
pub mod plan;
pub mod rehearsal;
