//! Invariant 7 at the API, fuzzed: schemathesis generates requests from openapi/openapi.yaml
//! (valid and invalid ones, and stateful sequences along the document's links) against the local
//! API on DynamoDB Local, and checks that no answer is a server error and that every status,
//! content type and body matches the document; once open (AuthMode NONE), and once under AuthMode
//! JWT as a guest with a signed test token, where other guests' reservations are 403.
//! `scripts/test.sh` installs schemathesis and sets SCHEMATHESIS; examples per operation scale
//! with FUZZ_SCALE (`--long`).

use std::net::SocketAddr;
use std::path::Path;
use test_support::stack::{TestStack, tokens};

/// Runs schemathesis against the API at `addr` with `headers` on every request; returns
/// (generated, passed) after checking every generated case passed and there were `at_least`.
async fn schemathesis(addr: SocketAddr, headers: &[String], examples: u32, at_least: u64) -> (u64, u64) {
    let st = std::env::var("SCHEMATHESIS")
        .expect("SCHEMATHESIS is not set: run scripts/test.sh, which installs schemathesis and points to it");
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.yaml");
    // Schemathesis keeps a crash cache in `.schemathesis/` under its working directory: run it in a
    // scratch directory so the source tree stays clean.
    let scratch = std::env::temp_dir().join(format!("schemathesis-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let mut command = tokio::process::Command::new(st);
    command
        .current_dir(&scratch)
        .arg("run")
        .arg(&document)
        .args(["--url", &format!("http://{addr}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", "20261124", "--no-color", "--generation-database", "none"])
        .arg("--report-dir")
        .arg(scratch.join("reports"));
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command.output().await.expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&scratch);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // "N generated, N passed": every generated case passed, and there were cases.
    let summary = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.len() >= 2 && numbers[0] > at_least && numbers[0] == numbers[1],
        "{summary}"
    );
    // How far the stateful phase went along the document's links (guarantees.md, "Not shown yet").
    if let Some(links) = stdout.lines().find(|l| l.contains("API Links:")) {
        println!("schemathesis stateful phase: {}", links.trim());
    }
    if let Some(warnings) = stdout.find("WARNINGS") {
        println!("{}", &stdout[warnings..]);
    }
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_every_answer_matches_the_document() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    // The slot the document's examples name: without it, nearly every generated reservation is a 404.
    api.put_slot(&reqwest::Client::new(), "dinner-2026-12-24", 1_000_000)
        .await;
    let examples = 50 * test_support::fuzz_scale();
    let (generated, passed) = schemathesis(api.addr, &[], examples, 100).await;
    test_support::figures::record(
        "api_fuzz",
        serde_json::json!({ "generated": generated, "passed": passed, "examples_per_operation": examples }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_jwt_every_answer_to_a_guest_matches_the_document_403s_included() {
    let stack = TestStack::start().await;
    // The slot, made by the open API on the same tables; then the API as AuthMode JWT deploys it.
    stack
        .spawn_api()
        .await
        .put_slot(&reqwest::Client::new(), "dinner-2026-12-24", 1_000_000)
        .await;
    let api = stack
        .spawn_api_with_auth(tokens::policy(), Some(tokens::authorizer()))
        .await;
    let guest = tokens::token("ada", serde_json::json!({}));
    let examples = 20 * test_support::fuzz_scale();
    let (generated, passed) = schemathesis(api.addr, &[format!("Authorization: Bearer {guest}")], examples, 40).await;
    test_support::figures::record(
        "api_fuzz_jwt",
        serde_json::json!({ "generated": generated, "passed": passed, "examples_per_operation": examples }),
    );
}
