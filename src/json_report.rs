//! `--json`: the engine's events as a stream of JSON objects, one per line on stdout, for
//! scripts and dashboards (schema: docs/json.md). Human progress lines are not printed then;
//! `tracing` logs still go to stderr.

use crate::error::{Error, Message};
use crate::event::{Event, NodeSummary, Reporter};
use crate::plan::Plan;
use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Bumped when a field changes meaning or goes; new fields and new kinds do not bump it
/// (readers ignore what they do not know).
pub const SCHEMA: u32 = 1;

pub struct JsonReporter {
    out: Mutex<Box<dyn Write + Send>>,
    started: Instant,
}

/// One line of the stream: the schema version, seconds since the command started, the event.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema: u32,
    t: f64,
    #[serde(flatten)]
    body: &'a T,
}

impl JsonReporter {
    pub fn stdout() -> Self {
        Self::to(Box::new(std::io::stdout()))
    }

    pub fn to(out: Box<dyn Write + Send>) -> Self {
        JsonReporter {
            out: Mutex::new(out),
            started: Instant::now(),
        }
    }

    /// Any serializable record on the stream (the run's start, the final table), stamped like
    /// the engine's events.
    pub fn emit<T: Serialize>(&self, body: &T) {
        let line = Line {
            schema: SCHEMA,
            t: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            body,
        };
        let text = serde_json::to_string(&line).expect("events serialize");
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed pipe (`| head`) must not stop the run: the stream is for watching it.
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }
}

/// The first record: which command, on which cluster and nodes.
#[derive(Serialize)]
pub struct Started {
    event: &'static str,
    command: &'static str,
    cluster: String,
    plan: String,
    nodes: Vec<String>,
}

impl Started {
    pub fn of(command: &'static str, plan: &Plan) -> Self {
        Started {
            event: "started",
            command,
            cluster: plan.cluster.clone(),
            plan: plan.path.display().to_string(),
            nodes: plan.nodes.iter().map(|n| n.name.clone()).collect(),
        }
    }
}

/// The final table: each node, what it runs, its links, how long its turn took.
#[derive(Serialize)]
pub struct Summary {
    event: &'static str,
    nodes: Vec<SummaryNode>,
}

#[derive(Serialize)]
struct SummaryNode {
    node: String,
    runs: &'static str,
    links: String,
    seconds: Option<f64>,
}

impl Summary {
    pub fn of(rows: &[NodeSummary]) -> Self {
        Summary {
            event: "summary",
            nodes: rows
                .iter()
                .map(|row| SummaryNode {
                    node: row.name.clone(),
                    runs: row.runs,
                    links: row.links.clone(),
                    seconds: row.took.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
                })
                .collect(),
        }
    }
}

/// The last record of a run that ended well: `completed`, `rolled_back` or `paused`.
#[derive(Serialize)]
pub struct Done {
    event: &'static str,
    outcome: &'static str,
}

impl Done {
    pub fn new(outcome: &'static str) -> Self {
        Done {
            event: "done",
            outcome,
        }
    }
}

/// The last record of a run that did not: its exit code, the message and the hint apart.
#[derive(Serialize)]
pub struct Failed {
    event: &'static str,
    exit_code: u8,
    message: String,
    hint: Option<String>,
}

impl Failed {
    pub fn of(error: &Error) -> Self {
        let message = match error {
            // A plan error renders for a terminal (file:line, the source line, `= hint:`); the
            // record keeps its parts apart.
            Error::Plan(plan) => {
                let at = match plan.line() {
                    Some(line) => format!("{}:{line}", plan.file().display()),
                    None => plan.file().display().to_string(),
                };
                let message = Message::new(format!("{at}: {}", plan.message()));
                match plan.hint() {
                    "" => message,
                    hint => message.hint(hint),
                }
            }
            _ => Message::from_rendered(&error.to_string()),
        };
        Failed {
            event: "failed",
            exit_code: error.exit_code(),
            message: message.text,
            hint: message.hint,
        }
    }
}

impl Reporter for JsonReporter {
    fn report(&self, event: Event) {
        self.emit(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NodeActivity, Note};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A plan error keeps its message and hint apart, without the terminal's rendering.
    #[test]
    fn a_plan_error_fails_with_its_message_and_hint_apart() {
        let err = Error::from(
            crate::plan::Plan::load(std::path::Path::new("/nonexistent/plan.yaml")).unwrap_err(),
        );
        let failed = serde_json::to_value(Failed::of(&err)).unwrap();
        assert_eq!(
            failed["message"],
            "/nonexistent/plan.yaml: cannot read the plan file: No such file or directory (os error 2)"
        );
        assert!(
            failed["hint"]
                .as_str()
                .unwrap()
                .starts_with("check the path"),
            "{failed}"
        );
        assert_eq!(failed["exit_code"], 2);
    }

    #[test]
    fn each_event_is_one_line_of_json_with_its_schema() {
        let sink = Sink::default();
        let reporter = JsonReporter::to(Box::new(sink.clone()));
        reporter.report(Event::Node {
            index: 1,
            name: "mim2@db1".into(),
            activity: NodeActivity::Starting { runs: "tls".into() },
        });
        reporter.report(Event::Note {
            note: Note::RollingBack {
                back_to: "plain tcp".into(),
            },
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["schema"], 1);
        assert_eq!(lines[0]["event"], "node");
        assert_eq!(lines[0]["node"], "mim2@db1");
        assert_eq!(lines[0]["activity"]["kind"], "starting");
        assert_eq!(lines[0]["activity"]["runs"], "tls");
        assert_eq!(lines[1]["event"], "note");
        assert_eq!(lines[1]["note"]["kind"], "rolling_back");
        assert!(lines[1]["t"].as_f64().unwrap() >= 0.0);
    }
}
