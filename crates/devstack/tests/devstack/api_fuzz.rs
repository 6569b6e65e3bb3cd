//! Invariant 7 at the API, fuzzed: schemathesis generates requests from openapi/openapi.yaml
//! (valid and invalid ones, and stateful sequences along the document's links) against the local
//! API on DynamoDB Local, and checks that no answer is a server error and that every status,
//! content type and body matches the document. `scripts/test.sh` installs schemathesis and sets
//! SCHEMATHESIS; examples per operation scale with FUZZ_SCALE (`--long`).

use std::path::Path;
use test_support::stack::TestStack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_every_answer_matches_the_document() {
    let st = std::env::var("SCHEMATHESIS")
        .expect("SCHEMATHESIS is not set: run scripts/test.sh, which installs schemathesis and points to it");
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    // The slot the document's examples name: without it, nearly every generated reservation is a 404.
    api.put_slot(&reqwest::Client::new(), "dinner-2026-12-24", 1_000_000)
        .await;
    let scale = test_support::fuzz_scale();
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.yaml");
    // Schemathesis keeps a crash cache in `.schemathesis/` under its working directory: run it in a
    // scratch directory so the source tree stays clean.
    let scratch = std::env::temp_dir().join(format!("schemathesis-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let output = tokio::process::Command::new(st)
        .current_dir(&scratch)
        .arg("run")
        .arg(&document)
        .args(["--url", &format!("http://{}", api.addr)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", &(50 * scale).to_string()])
        .args(["--seed", "20261124", "--no-color", "--generation-database", "none"])
        .arg("--report-dir")
        .arg(scratch.join("reports"))
        .output()
        .await
        .expect("schemathesis runs");
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
        numbers.len() >= 2 && numbers[0] > 100 && numbers[0] == numbers[1],
        "{summary}"
    );
    test_support::figures::record(
        "api_fuzz",
        serde_json::json!({ "generated": numbers[0], "passed": numbers[1], "examples_per_operation": 50 * scale }),
    );
    if let Some(warnings) = stdout.find("WARNINGS") {
        println!("{}", &stdout[warnings..]);
    }
}
