//! The shape of the crate, checked: the top-level modules of src/ depend on one another in one
//! direction (no cycle), and docs/architecture.md shows that map as it is.
//!
//! A module is `src/NAME.rs` with everything under `src/NAME/`; it depends on every module it
//! names as `crate::OTHER` (in `use` lines and in paths), test code included, comments not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_two_modules_depend_on_each_other_through_any_path() {
    let graph = module_graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "an import cycle between top-level modules: {}\n\
             move what the lower module needs into it or into a leaf module (docs/architecture.md)",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_module_map_in_the_docs_is_current() {
    let graph = module_graph();
    let expected = render_map(&graph);
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (begin, end) = ("<!-- module-map:begin -->\n", "<!-- module-map:end -->");
    let start = doc
        .find(begin)
        .expect("docs/architecture.md has a module-map block")
        + begin.len();
    let stop = doc[start..].find(end).expect("the module-map block ends") + start;
    assert_eq!(
        &doc[start..stop],
        expected,
        "docs/architecture.md's module map is out of date; put this between its markers:\n{expected}"
    );
}

/// The journal's step and phase change only through `Journal::set_step`, `set_phase` and
/// `begin_roll`, which refuse illegal moves; nothing outside journal.rs assigns them directly
/// (tests excepted: they build journals in any state on purpose).
#[test]
fn journal_steps_and_phases_change_only_through_the_journal() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for file in rust_files_under(&src) {
        if file.ends_with("journal.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            if [".phase = ", ".step = "].iter().any(|a| line.contains(a)) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "use Journal::set_step / set_phase / begin_roll:\n{}",
        offenders.join("\n")
    );
}

/// One line per module, layer by layer (layer 0: depends on no other module; layer n: on
/// modules of lower layers only), each with the modules it uses.
fn render_map(graph: &Graph) -> String {
    // Layers exist only without a cycle; with one, the cycle test says where it is.
    if let Some(cycle) = find_cycle(graph) {
        return format!("(no map: the modules import one another in a cycle: {cycle:?})\n");
    }
    let layers = layers(graph);
    let mut out = String::from("```text\n");
    let deepest = layers.values().copied().max().unwrap_or(0);
    for layer in 0..=deepest {
        out.push_str(&format!("layer {layer}\n"));
        for (module, deps) in graph.iter().filter(|(m, _)| layers[*m] == layer) {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            if deps.is_empty() {
                out.push_str(&format!("  {module}\n"));
            } else {
                out.push_str(&format!("  {module:<14} → {}\n", deps.join(", ")));
            }
        }
    }
    out.push_str("```\n");
    out
}

fn layers(graph: &Graph) -> BTreeMap<String, usize> {
    fn layer_of(m: &str, graph: &Graph, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(&l) = memo.get(m) {
            return l;
        }
        let l = graph[m]
            .iter()
            .map(|d| layer_of(d, graph, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(m.to_string(), l);
        l
    }
    let mut memo = BTreeMap::new();
    for m in graph.keys() {
        layer_of(m, graph, &mut memo);
    }
    memo
}

fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(m) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|p| p == m).unwrap();
                let mut cycle = path[from..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m.to_string(), Mark::Open);
        path.push(m.to_string());
        for dep in &graph[m] {
            if let Some(cycle) = visit(dep, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut marks, &mut Vec::new()))
}

fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "lib" && m != "main")
        .collect();
    modules.sort();
    let known: BTreeSet<String> = modules.iter().cloned().collect();
    modules
        .iter()
        .map(|m| {
            let mut files = vec![src.join(format!("{m}.rs"))];
            files.extend(rust_files_under(&src.join(m)));
            let deps = files
                .iter()
                .flat_map(|f| crate_references(&std::fs::read_to_string(f).unwrap()))
                .filter(|d| d != m && known.contains(d))
                .collect();
            (m.clone(), deps)
        })
        .collect()
}

fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for path in entries.map(|e| e.unwrap().path()) {
        if path.is_dir() {
            files.extend(rust_files_under(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The first segment of every `crate::` path in `source`: `crate::a::B`, `crate::{a, b::{C}}`.
fn crate_references(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn references_are_read_from_use_lines_and_paths_but_not_comments() {
    let source = "use crate::{a, b::{C, d::E}, f::*};\nuse crate::g;\nlet x = crate::h::y();\n// crate::i\n/// [`crate::j`]\n";
    let found: Vec<String> = crate_references(source).into_iter().collect();
    assert_eq!(found, ["a", "b", "f", "g", "h"]);
    let cyclic: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(m, d)| (m.to_string(), BTreeSet::from([d.to_string()])))
        .collect();
    assert_eq!(find_cycle(&cyclic).unwrap(), ["a", "b", "c", "a"]);
}
