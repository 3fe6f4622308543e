//! `distls rotate --json`: a rotation's records on the JSON stream (docs/json.md), and its lines
//! for people, which go to stderr when stdout is the stream.

use crate::cert_info::CertSummary;
use crate::json_report::JsonReporter;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where a rotation says what it does: lines for people, and with `--json` the records.
#[derive(Clone, Default)]
pub struct Output {
    json: Option<Arc<JsonReporter>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("json", &self.json.is_some())
            .finish()
    }
}

impl Output {
    pub fn new(json: Option<Arc<JsonReporter>>) -> Self {
        Output { json }
    }

    /// A line for people: stdout, or stderr when stdout is the JSON stream.
    pub fn say(&self, text: &str) {
        match self.json {
            Some(_) => eprintln!("{text}"),
            None => println!("{text}"),
        }
    }

    pub fn emit<T: Serialize>(&self, record: &T) {
        if let Some(json) = &self.json {
            json.emit(record);
        }
    }
}

/// A move begins: its files are about to be installed on `node`.
#[derive(Serialize)]
pub struct MoveBegins<'a> {
    event: &'static str,
    index: usize,
    node: &'a str,
    phase: &'static str,
    files: Vec<String>,
}

impl<'a> MoveBegins<'a> {
    pub fn new(index: usize, node: &'a str, phase: &'static str, files: Vec<String>) -> Self {
        MoveBegins {
            event: "move",
            index,
            node,
            phase,
            files,
        }
    }
}

/// A move is proven: the node serves `served`, new links from every peer were accepted.
#[derive(Serialize)]
pub struct MoveDone<'a> {
    event: &'static str,
    index: usize,
    node: &'a str,
    phase: &'static str,
    served: serde_json::Value,
    seconds: f64,
}

impl<'a> MoveDone<'a> {
    pub fn new(
        index: usize,
        node: &'a str,
        phase: &'static str,
        served: &CertSummary,
        took: Duration,
    ) -> Self {
        MoveDone {
            event: "move_done",
            index,
            node,
            phase,
            served: crate::served::cert_json(served, SystemTime::now()),
            seconds: (took.as_secs_f64() * 10.0).round() / 10.0,
        }
    }
}

/// A move undone by a rollback: its files hold what they held; `reachable` false when the node
/// was down (it reads them when it starts; nothing could be proven).
#[derive(Serialize)]
pub struct MoveRestored<'a> {
    event: &'static str,
    index: usize,
    node: &'a str,
    phase: &'static str,
    reachable: bool,
}

impl<'a> MoveRestored<'a> {
    pub fn new(index: usize, node: &'a str, phase: &'static str, reachable: bool) -> Self {
        MoveRestored {
            event: "move_restored",
            index,
            node,
            phase,
            reachable,
        }
    }
}

/// `--forget`: which before-copies went, and which stay and why (`node: path[: why]`).
#[derive(Serialize)]
pub struct Forgotten {
    event: &'static str,
    removed: Vec<String>,
    left: Vec<String>,
}

impl Forgotten {
    pub fn new(removed: Vec<String>, left: Vec<String>) -> Self {
        Forgotten {
            event: "forgotten",
            removed,
            left,
        }
    }
}
