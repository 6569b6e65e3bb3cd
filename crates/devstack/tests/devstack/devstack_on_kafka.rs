//! `scripts/dev.sh --bus kafka` without the script: the `devstack up` it runs, on the test
//! engines with EVENT_BUS=kafka (tables, the notifications topic and the Kafka topic provisioned
//! under fresh names), passes scripts/smoke.sh (the cancel reaches the read model through the
//! relay, the topic and the projector), and `devstack events` (scripts/events.sh) prints the
//! events from the topic.

use std::process::{Command, Stdio};

fn fresh_names() -> Vec<(String, String)> {
    let prefix = format!("tk{}-", ulid::Ulid::new().to_string().to_lowercase());
    settings::names::ALL
        .iter()
        .map(|name| (name.var.to_owned(), format!("{prefix}{}", name.default)))
        .chain([("KAFKA_TOPIC".to_owned(), format!("{prefix}reservation-events"))])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devstack_up_on_the_kafka_bus_passes_the_smoke_script_and_prints_the_events_from_the_topic() {
    assert!(
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok_and(|v| !v.is_empty()),
        "KAFKA_BOOTSTRAP_SERVERS is not set: run the tests with scripts/test.sh"
    );
    let names = fresh_names();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead_letters = std::env::temp_dir().join(format!("devstack-kafka-{}", ulid::Ulid::new()));
    let devstack = env!("CARGO_BIN_EXE_devstack");
    let mut up = Command::new(devstack)
        .args(["up", "--addr", &addr.to_string()])
        .envs(names.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("EVENT_BUS", "kafka")
        .env("DEVSTACK_DEAD_LETTER_DIR", &dead_letters)
        .env_remove("NOTIFICATIONS_TOPIC_ARN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("devstack up starts");
    let mut listening = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            listening = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smoke.sh");
    let smoke = tokio::task::spawn_blocking(move || {
        Command::new(script)
            .arg(format!("http://{addr}"))
            .env("SMOKE_READ_MODEL_WAIT", "30")
            .output()
            .expect("scripts/smoke.sh runs")
    })
    .await
    .unwrap();
    let envs = names.clone();
    let events = tokio::task::spawn_blocking(move || {
        Command::new(devstack)
            .arg("events")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("EVENT_BUS", "kafka")
            .output()
            .expect("devstack events runs")
    })
    .await
    .unwrap();
    let _ = up.kill();
    let _ = up.wait();
    assert!(listening, "devstack up did not serve the API within 30 s");

    let stdout = String::from_utf8_lossy(&smoke.stdout);
    assert!(
        smoke.status.success() && stdout.contains("smoke: all checks passed"),
        "smoke.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&smoke.stderr)
    );
    assert!(events.status.success(), "{}", String::from_utf8_lossy(&events.stderr));
    let printed: Vec<domain::EventEnvelope> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one envelope per line"))
        .collect();
    // The smoke check makes a reservation and cancels it: both events, from the topic.
    assert!(printed.len() >= 2, "{printed:?}");
    let cancelled = printed
        .iter()
        .find(|e| e.version.get() == 2)
        .expect("the cancel's event");
    assert!(
        printed
            .iter()
            .any(|e| e.aggregate_id == cancelled.aggregate_id && e.version.get() == 1),
        "{printed:?}"
    );
}
