//! The `--json` schema as docs/json.md states it, and a check of emitted objects against it.
//! Included by the engine tests and the integration tests (`#[path]`), so the document is the
//! one schema both hold the stream to.

use std::collections::BTreeMap;

/// A record or kind and its fields: (name, may be null).
type Shapes = BTreeMap<String, Vec<(String, bool)>>;

pub struct Schema {
    events: Shapes,
    activities: Shapes,
    notes: Shapes,
    /// The objects inside a `status` record: each of `nodes`, and what a node serves and trusts.
    status: Shapes,
}

impl Schema {
    pub fn from_docs() -> Schema {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md");
        let doc = std::fs::read_to_string(path).expect("docs/json.md");
        Schema {
            events: table(&doc, "<!-- json:events -->"),
            activities: table(&doc, "<!-- json:activities -->"),
            notes: table(&doc, "<!-- json:notes -->"),
            status: table(&doc, "<!-- json:status -->"),
        }
    }

    /// Checks one line of the stream; the record's `event` name when it fits.
    pub fn check_line(&self, line: &str) -> Result<String, String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        let object = value.as_object().ok_or(format!("not an object: {line}"))?;
        if object.get("schema") != Some(&serde_json::json!(1)) {
            return Err(format!("no `schema: 1`: {line}"));
        }
        if !object.get("t").is_some_and(serde_json::Value::is_number) {
            return Err(format!("no number `t`: {line}"));
        }
        let event = object
            .get("event")
            .and_then(|e| e.as_str())
            .ok_or(format!("no `event`: {line}"))?;
        let fields = self
            .events
            .get(event)
            .ok_or(format!("event `{event}` is not in docs/json.md: {line}"))?;
        let mut rest = object.clone();
        for key in ["schema", "t", "event"] {
            rest.remove(key);
        }
        fits(&rest, fields).map_err(|why| format!("{event}: {why}: {line}"))?;
        for (field, kinds) in [("activity", &self.activities), ("note", &self.notes)] {
            if let Some(inner) = rest.get(field) {
                let mut inner = inner
                    .as_object()
                    .ok_or(format!("`{field}` is not an object: {line}"))?
                    .clone();
                let kind = inner
                    .remove("kind")
                    .and_then(|k| k.as_str().map(str::to_string))
                    .ok_or(format!("`{field}` has no `kind`: {line}"))?;
                let fields = kinds.get(&kind).ok_or(format!(
                    "{field} kind `{kind}` is not in docs/json.md: {line}"
                ))?;
                fits(&inner, fields).map_err(|why| format!("{field} {kind}: {why}: {line}"))?;
            }
        }
        if event == "status" {
            self.check_status_nodes(&rest)
                .map_err(|why| format!("status: {why}: {line}"))?;
        }
        if event == "move_done" {
            self.fits_shape("served", &rest["served"])
                .map_err(|why| format!("move_done: {why}: {line}"))?;
        }
        Ok(event.to_string())
    }

    /// Each node of a `status` record, its `served` leaf and its `trusts` files with their `cas`.
    fn check_status_nodes(
        &self,
        status: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let nodes = status["nodes"].as_array().ok_or("`nodes` is not a list")?;
        for node in nodes {
            let node = self.fits_shape("node", node)?;
            if !node["served"].is_null() {
                self.fits_shape("served", &node["served"])?;
            }
            let files = node["trusts"].as_array().ok_or("`trusts` is not a list")?;
            for file in files {
                let file = self.fits_shape("trusts", file)?;
                let cas = file["cas"].as_array().ok_or("`cas` is not a list")?;
                for ca in cas {
                    self.fits_shape("cas", ca)?;
                }
            }
        }
        Ok(())
    }

    fn fits_shape<'v>(
        &self,
        shape: &str,
        value: &'v serde_json::Value,
    ) -> Result<&'v serde_json::Map<String, serde_json::Value>, String> {
        let object = value
            .as_object()
            .ok_or(format!("a `{shape}` is not an object"))?;
        let fields = self
            .status
            .get(shape)
            .ok_or(format!("`{shape}` is not in docs/json.md's status table"))?;
        fits(object, fields).map_err(|why| format!("{shape}: {why}"))?;
        Ok(object)
    }
}

fn fits(
    object: &serde_json::Map<String, serde_json::Value>,
    fields: &[(String, bool)],
) -> Result<(), String> {
    for (name, nullable) in fields {
        match object.get(name) {
            None => return Err(format!("`{name}` is missing")),
            Some(serde_json::Value::Null) if !nullable => {
                return Err(format!("`{name}` is null"));
            }
            Some(_) => {}
        }
    }
    match object
        .keys()
        .find(|k| !fields.iter().any(|(name, _)| name == *k))
    {
        Some(extra) => Err(format!("`{extra}` is not in docs/json.md")),
        None => Ok(()),
    }
}

/// The table after `marker`: its first column's name and the second's fields (`a`, `b?`).
fn table(doc: &str, marker: &str) -> Shapes {
    let start = doc
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in docs/json.md"));
    let body = &doc[start..];
    let end = body.find("<!-- json:end -->").expect("the table ends");
    body[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let fields = cells[2]
                .split(',')
                .map(|f| f.trim().trim_matches('`'))
                .filter(|f| !f.is_empty())
                .map(|f| match f.strip_suffix('?') {
                    Some(f) => (f.to_string(), true),
                    None => (f.to_string(), false),
                })
                .collect();
            (name, fields)
        })
        .collect()
}

#[allow(dead_code)]
pub fn check_stream(text: &str) -> Vec<String> {
    let schema = Schema::from_docs();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            schema
                .check_line(line)
                .unwrap_or_else(|why| panic!("{why}"))
        })
        .collect()
}

/// A `status` node as `served::Served::json_fields` writes it fits the documented shapes; a field
/// the docs do not list is refused, inside `served` too.
#[test]
fn status_nodes_with_what_they_serve_fit_the_schema() {
    use distls::cert_info::CertSummary;
    use distls::served::{Leaf, Served, Trusted};
    let cert = CertSummary {
        subject: "CN=node".into(),
        issuer: "CN=ca".into(),
        serial: "0A".into(),
        not_after: 4_000_000_000,
        sha256: "ab".repeat(32),
    };
    let served = Served {
        leaf: Leaf::Serves(cert.clone()),
        trusts: Ok(vec![Trusted {
            file: "/etc/ca.pem".into(),
            cas: Ok(vec![cert]),
        }]),
    };
    let mut node = serde_json::json!({
        "node": "a@h", "step": null, "file": "tls", "runs": "tls", "links": "-", "not_found": null,
    });
    for (field, value) in served.json_fields(std::time::SystemTime::now()) {
        node[field] = value;
    }
    let record = |node: &serde_json::Value| {
        serde_json::json!({"schema": 1, "t": 0.0, "event": "status", "cluster": "c", "journal": null, "nodes": [node]})
            .to_string()
    };
    let schema = Schema::from_docs();
    assert_eq!(schema.check_line(&record(&node)), Ok("status".to_string()));
    node["served"]["extra"] = serde_json::json!(1);
    let refused = schema.check_line(&record(&node)).unwrap_err();
    assert!(
        refused.contains("served: `extra` is not in docs/json.md"),
        "{refused}"
    );
}
