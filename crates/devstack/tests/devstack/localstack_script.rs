//! scripts/localstack.sh refuses what it cannot do with one readable line and leaves no process
//! behind: a port in use, no Python 3.13, a LocalStack that exits during start-up. Each run has a
//! folder of its own (LOCALSTACK_DIR), so a LocalStack the developer runs is never touched. The
//! start-up failure runs the LocalStack `scripts/test.sh` installed in .localstack.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("localstack-script-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn localstack_sh(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    // Run as the README writes it, so a script that is not executable fails here too.
    Command::new(root().join("scripts/localstack.sh"))
        .args(args)
        .env("LOCALSTACK_DIR", dir)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("scripts/localstack.sh runs")
}

/// The refusal: exit 1 and exactly one line on stderr beginning with `error:`.
fn refusal(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_owned()
}

/// No process of LocalStack's runs out of `dir`.
fn nothing_left_from(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let mentions = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(&needle);
        assert!(
            !(mentions(&cmdline) || mentions(&environ)),
            "a process of {needle} is left: {}",
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        );
    }
}

#[test]
fn a_port_in_use_is_refused_in_one_line_before_anything_starts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = scratch();
    let output = localstack_sh(&dir, &["start"], &[("LOCALSTACK_PORT", &port)]);
    let line = refusal(&output);
    assert!(
        line.contains(&format!("port {port} is in use")) && line.contains("LOCALSTACK_PORT"),
        "{line}"
    );
    nothing_left_from(&dir);
}

#[test]
fn without_python_3_13_it_says_how_to_get_one() {
    let dir = scratch();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // An installation folder of its own, empty: LocalStack has to be installed, and cannot be.
    let home = scratch();
    let output = localstack_sh(
        &dir,
        &["start"],
        &[
            ("LOCALSTACK_PORT", &port),
            ("LOCALSTACK_PYTHON", "/nonexistent/python3.13"),
            ("LOCALSTACK_HOME", &home.to_string_lossy()),
        ],
    );
    let line = refusal(&output);
    assert!(
        line.contains("needs Python 3.13") && line.contains("LOCALSTACK_PYTHON"),
        "{line}"
    );
    nothing_left_from(&dir);
    nothing_left_from(&home);
}

#[test]
fn a_localstack_that_exits_during_start_up_is_reported_in_one_line_and_leaves_nothing() {
    assert!(
        root().join(".localstack/venv/bin/python").exists(),
        "LocalStack is not installed in .localstack: run the tests with scripts/test.sh, which installs it"
    );
    let dir = scratch();
    // A port LocalStack cannot listen on: it starts, then gives up.
    let output = localstack_sh(&dir, &["start"], &[("LOCALSTACK_PORT", "99999")]);
    let line = refusal(&output);
    assert!(
        line.contains("LocalStack exited during start-up") && line.contains("port out of range"),
        "{line}"
    );
    nothing_left_from(&dir);
    // Nothing is left to stop, and status says so.
    let status = localstack_sh(&dir, &["status"], &[("LOCALSTACK_PORT", "99999")]);
    assert_eq!(status.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&status.stdout).contains("not running"));
}

/// `localstack_api_url`, the URL scripts/deploy-localstack.sh prints and writes to the outputs
/// file as `LocalApiUrl`, for the stack's `ApiUrl` on LocalStack's endpoint.
fn local_api_url(api_url: &str, endpoint: &str) -> String {
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#"set -euo pipefail; source "$0/scripts/lib/stack.sh"; source "$0/scripts/lib/localstack.sh"; localstack_api_url "$1" "$2""#)
        .arg(root())
        .args([api_url, endpoint])
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim_end().to_owned()
}

#[test]
fn a_rest_apis_url_is_reached_on_localstacks_port_by_path_and_others_as_they_are() {
    let endpoint = "http://127.0.0.1:14566/";
    // The AWS form, whatever domain LocalStack puts after execute-api.
    for api_url in [
        "https://k2x9abc1.execute-api.us-east-1.amazonaws.com/prod",
        "https://k2x9abc1.execute-api.localhost:4566/prod/",
    ] {
        assert_eq!(
            local_api_url(api_url, endpoint),
            "http://127.0.0.1:14566/_aws/execute-api/k2x9abc1/prod"
        );
    }
    let function_url = "http://x1y2.lambda-url.us-east-1.localhost:14566";
    assert_eq!(local_api_url(&format!("{function_url}/"), endpoint), function_url);
    let http_api = "https://h7.execute-api.eu-west-1.amazonaws.com";
    assert_eq!(local_api_url(http_api, endpoint), http_api);
}
