use std::process::Command;

fn run_plan(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_distls"))
        .args(["migrate", "--classic", "--dry-run"])
        .arg(&plan)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD_HEAD: &str =
    "version: 1\ncluster: c\ntls:\n  certfile: /c.pem\n  keyfile: /k.pem\n  cacertfile: /ca.pem\n";

#[test]
fn an_unknown_key_is_reported_with_file_line_and_column() {
    let text = format!(
        "{GOOD_HEAD}defaults:\n  vm_dist_args: /x/{{sname}}/vm.dist.args\n  vm_arg: /x/vm.args\nnodes:\n  - name: a@h\n"
    );
    let (code, stderr) = run_plan(&text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("plan.yaml:9:3"), "{stderr}");
    assert!(stderr.contains("vm_arg"), "{stderr}");
}

#[test]
fn a_duplicate_node_is_reported_at_the_second_one() {
    let text = format!(
        "{GOOD_HEAD}defaults:\n  vm_dist_args: /x/{{sname}}/vm.dist.args\n  vm_args: /x/{{sname}}/vm.args\n  commands:\n    stop: s\n    start: s\nnodes:\n  - name: a@h\n  - name: a@h\n"
    );
    let (code, stderr) = run_plan(&text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("plan.yaml:15:"), "{stderr}");
}

#[test]
fn a_missing_args_file_names_the_node_and_the_path() {
    let text = format!(
        "{GOOD_HEAD}defaults:\n  vm_dist_args: /nonexistent/{{sname}}/vm.dist.args\n  vm_args: /nonexistent/{{sname}}/vm.args\n  commands:\n    stop: s\n    start: s\nnodes:\n  - name: a@h\n"
    );
    let (code, stderr) = run_plan(&text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("plan.yaml:8:"), "{stderr}");
    assert!(stderr.contains("/nonexistent/a/vm"), "{stderr}");
}

#[test]
fn broken_yaml_is_located() {
    let (code, stderr) = run_plan("version: 1\ncluster: [unclosed\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("plan.yaml:"), "{stderr}");
}
