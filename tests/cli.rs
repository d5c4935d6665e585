//! The real binary: `cutover check` on good and bad configs, and `ctl`
//! against a running instance.

mod support;

use std::process::Command;

fn cutover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
}

const GOOD: &str = r#"[services.web]
split = { blue = 90, green = 10 }

[[services.web.listeners]]
listen = "127.0.0.1:8080"

[[services.web.listeners]]
listen = "127.0.0.1:8081"
pool = "green"

[services.web.pools.blue]
backends = ["10.0.1.10:8080"]

[services.web.pools.green]
backends = ["10.0.2.10:8080"]
"#;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    let out = cutover().arg("check").arg(&path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE"),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE"),
    )
}

#[test]
fn check_accepts_a_good_config_and_the_shipped_examples() {
    let (ok, stdout, _) = check(GOOD);
    assert!(ok);
    assert_eq!(stdout.trim(), "FILE: ok");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut cmd = cutover();
    cmd.arg("check");
    for e in std::fs::read_dir(examples).unwrap() {
        cmd.arg(e.unwrap().path());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_file_line_and_key_for_each_kind_of_bad_config() {
    let cases: Vec<(String, &str)> = vec![
        (GOOD.replace("split = {", "colour = 1\nsplit = {"), "FILE:2: `services.web.colour`: unknown key"),
        (GOOD.replace("green = 10 }", "purple = 10 }"), "FILE:2: `services.web.split.purple`: the split names pool `purple`, which does not exist"),
        (GOOD.replace("green = 10 }", "purple = 10 }"), "FILE:2: `services.web.split`: pool `green` is missing from the split"),
        (GOOD.replace("blue = 90, green = 10", "blue = 0, green = 0"), "FILE:2: `services.web.split`: all weights are zero"),
        (GOOD.replace("127.0.0.1:8081", "127.0.0.1:8080"), "FILE:8: `services.web.listeners[1].listen`: 127.0.0.1:8080 is already used"),
        (GOOD.replace("pool = \"green\"", "pool = \"teal\""), "FILE:9: `services.web.listeners[1].pool`: preview pool `teal` does not exist"),
        (GOOD.replace("10.0.1.10:8080", "10.0.1.10"), "FILE:12: `services.web.pools.blue.backends[0]`: `10.0.1.10` is not a backend address"),
        (GOOD.replace("[\"10.0.2.10:8080\"]", "[]"), "FILE:15: `services.web.pools.green.backends`: the backend list is empty"),
        (GOOD.replace("127.0.0.1:8080\"", "127.0.0.1\""), "FILE:5: `services.web.listeners[0].listen`: `127.0.0.1` is not a socket address"),
    ];
    for (text, want) in cases {
        let (ok, _, stderr) = check(&text);
        assert!(!ok, "accepted:\n{text}");
        assert!(stderr.contains(want), "want `{want}` in:\n{stderr}");
    }
}

#[test]
fn check_reports_all_errors_at_once() {
    let text = GOOD
        .replace("split = {", "colour = 1\nsplit = {")
        .replace("pool = \"green\"", "pool = \"teal\"")
        .replace("[\"10.0.2.10:8080\"]", "[]");
    let (ok, _, stderr) = check(&text);
    assert!(!ok);
    assert!(stderr.contains("FILE: 3 error(s)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_switches_and_reports_through_the_admin_api() {
    let h = support::Harness::new().start().await;
    let admin = format!("http://{}", h.admin);
    let run = |args: &[&str]| {
        let out = cutover()
            .arg("ctl")
            .args(args)
            .env("CUTOVER_ADMIN", &admin)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(&["split", "web", "blue=90", "green=10", "--reason", "canary"])
    });
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "web: blue=100 green=0 -> blue=90 green=10 (generation 2)"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["switch", "web", "green"]));
    assert!(ok);
    assert!(out.contains("-> blue=0 green=100"), "{out}");
    assert_eq!(
        support::get_once(h.proxy, "/", &[]).await.unwrap().pool(),
        "green"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["status"]));
    assert!(ok);
    assert!(
        out.contains("generation 3") && out.contains("green") && out.contains("100.0%"),
        "{out}"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["--json", "rollback", "web"]));
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["split"]["green"], 10);
    let (ok, _, err) = tokio::task::block_in_place(|| run(&["switch", "web", "purple"]));
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("no pool `purple`"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| run(&["split", "web", "blue:90"]));
    assert!(!ok && err.contains("is not POOL=WEIGHT"), "{err}");
}

#[test]
fn a_busy_port_names_the_port_and_the_config_key() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = GOOD
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8081", "127.0.0.1:0")
        .replace(
            "[services.web]",
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.web]",
        );
    std::fs::write(&path, text).unwrap();
    let out = cutover()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (config key `services.web.listeners[0].listen`)"
        )),
        "{err}"
    );
}
