//! scripts/smoke.sh, the check users run against a deployed endpoint, passes against the local
//! API with the relay and projector running behind it, as under scripts/dev.sh.

use std::process::Command;
use std::time::Duration;
use test_support::stack::TestStack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_script_passes_against_the_local_api() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let relay = stack.relay_mapping().await;
    let projector = stack.projector_mapping().await;
    let running = [
        tokio::spawn(relay.run(Duration::from_millis(50), until_stopped(stopped.clone()))),
        tokio::spawn(projector.run(Duration::from_millis(50), until_stopped(stopped.clone()))),
    ];

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smoke.sh");
    let url = api.url("");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(script)
            .arg(url)
            .env("SMOKE_READ_MODEL_WAIT", "30")
            .output()
            .expect("bash runs")
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    for task in running {
        task.await.unwrap();
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smoke.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("smoke: all checks passed"), "{stdout}");
    assert_eq!(stdout.matches("smoke: ok").count(), 7, "{stdout}");
}
