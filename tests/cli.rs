//! The `mqtt-lab` binary: start-up line, signals, file errors, port in use, `user` commands,
//! default files.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::listening_port;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-lab");

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Starts the headless broker and returns it with the port from its `listening on` line.
fn spawn_headless(dir: &Path, extra: &[&str]) -> (Child, u16) {
    let topics = write(dir, "topics.ron", r#"(topics: ["lab/a"])"#);
    let users = write(dir, "users.ron", "(allow_anonymous: true, users: [])");
    let mut child = Command::new(BIN)
        .args([
            "--headless",
            "--port",
            "0",
            "--topics",
            &topics,
            "--users",
            &users,
        ])
        .args(extra)
        .env("HOME", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child);
    (child, port)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prints_the_real_port_and_stops_cleanly_on_sigterm_and_sigint() {
    for sig in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port) = spawn_headless(dir.path(), &[]);
        assert_ne!(port, 0);
        // It really is an MQTT broker there: CONNECT gets CONNACK.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10, 0, 1, b'x',
        ])
        .unwrap();
        let mut ack = [0u8; 4];
        std::io::Read::read_exact(&mut s, &mut ack).unwrap();
        assert_eq!(ack, [0x20, 2, 0, 0]);
        signal(&child, sig);
        let status = wait_exit(&mut child);
        assert_eq!(status.code(), Some(0), "{sig}");
    }
}

fn run(args: &[&str], home: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs the headless broker with these files on `port`, for start-ups that must fail.
fn run_headless(dir: &Path, port: &str, topics: &str, users: &str) -> Output {
    run_headless_with(dir, port, topics, users, &[])
}

/// The same, with more options.
fn run_headless_with(dir: &Path, port: &str, topics: &str, users: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--headless",
        "--port",
        port,
        "--topics",
        topics,
        "--users",
        users,
    ];
    args.extend_from_slice(extra);
    run(&args, dir, None)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bad_topics_file_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write(
        dir.path(),
        "topics.ron",
        "(\n  topics: [\n    \"ok\",\n    \"bad/#/x\",\n  ],\n)\n",
    );
    let users = write(dir.path(), "users.ron", "(allow_anonymous: true)");
    let out = run_headless(dir.path(), "0", &topics, &users);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("mqtt-lab: error: "), "{err}");
    assert!(last.contains(&format!("{topics}:4:5:")), "{last}");

    let syntax = write(dir.path(), "syntax.ron", "(topics: [\"a\",, ])");
    let out = run_headless(dir.path(), "0", &syntax, &users);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{syntax}:1:")),
        "{}",
        stderr(&out)
    );

    let out = run_headless(dir.path(), "0", "/nonexistent/t.ron", &users);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/t.ron"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_port_in_use_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let topics = write(dir.path(), "topics.ron", "(topics: [])");
    let users = write(dir.path(), "users.ron", "(allow_anonymous: true)");
    let out = run_headless(dir.path(), &port, &topics, &users);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("--port"), "the fix is named: {err}");
}

#[test]
fn user_commands_keep_other_users_and_store_only_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let users = write(
        dir.path(),
        "users.ron",
        "(allow_anonymous: false, users: [])",
    );
    let out = run(
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@lab.example",
            "--password",
            "pw1",
            "--users",
            &users,
        ],
        dir.path(),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &["user", "add", "bob", "--users", &users],
        dir.path(),
        Some("from-stdin\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        !text.contains("pw1") && !text.contains("from-stdin"),
        "{text}"
    );
    assert_eq!(text.matches("$argon2id$").count(), 2);
    let list = run(&["user", "list", "--users", &users], dir.path(), None);
    let stdout = String::from_utf8(list.stdout).unwrap();
    assert!(
        stdout.contains("alice\talice@lab.example\n") && stdout.contains("bob\n"),
        "{stdout}"
    );
    assert!(stdout.contains("anonymous logins refused"));

    let parsed = mqtt_lab::broker::users::Users::load(Path::new(&users)).unwrap();
    assert!(matches!(
        parsed.check_login(
            Some("bob"),
            Some(b"from-stdin"),
            &mut mqtt_lab::broker::auth::Verifier::default()
        ),
        mqtt_lab::broker::users::LoginCheck::Accepted(_)
    ));

    let out = run(
        &["user", "remove", "alice", "--users", &users],
        dir.path(),
        None,
    );
    assert!(out.status.success());
    let out = run(
        &["user", "remove", "alice", "--users", &users],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no user \"alice\""),
        "{}",
        stderr(&out)
    );
    let parsed = mqtt_lab::broker::users::Users::load(Path::new(&users)).unwrap();
    let names: Vec<_> = parsed.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["bob"]);
    assert!(!parsed.allow_anonymous, "settings are kept");
}

#[test]
fn default_files_are_created_in_the_config_folder_on_first_run() {
    let home = tempfile::tempdir().unwrap();
    let out = run(&["user", "list"], home.path(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = home.path().join(".config/mqtt-lab");
    let users = std::fs::read_to_string(dir.join("users.ron")).unwrap();
    assert_eq!(users, mqtt_lab::broker::users::DEFAULT_USERS);
    // The broker writes the topic list too, and starts with it.
    let mut child = Command::new(BIN)
        .args(["--headless", "--port", "0"])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("mqtt-lab: listening on mqtt://127.0.0.1:"),
        "{line}"
    );
    let topics = std::fs::read_to_string(dir.join("topics.ron")).unwrap();
    assert_eq!(topics, mqtt_lab::broker::topic_list::DEFAULT_TOPICS);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
}

#[cfg(feature = "gui")]
#[test]
fn without_a_display_the_window_says_to_use_headless() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--port", "0"])
        .env("HOME", home.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no display") && err.contains("--headless"),
        "{err}"
    );
}

/// Twenty `user add` at once on one file: each reads, changes and writes under the file's lock,
/// so none is lost.
#[test]
fn concurrent_user_adds_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let users = write(
        dir.path(),
        "users.ron",
        "(allow_anonymous: false, users: [])",
    );
    let adds: Vec<_> = (0..20)
        .map(|i| {
            Command::new(BIN)
                .args(["user", "add", &format!("student{i}"), "--password", "pw"])
                .args(["--users", &users])
                .env("HOME", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for add in adds {
        let out = add.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let parsed = mqtt_lab::broker::users::Users::load(Path::new(&users)).unwrap();
    let mut names: Vec<_> = parsed.users.iter().map(|u| u.username.clone()).collect();
    names.sort();
    let mut expected: Vec<_> = (0..20).map(|i| format!("student{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn user_add_creates_a_missing_file_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("new-users.ron");
    let users = users.to_str().unwrap();
    let out = run(
        &["user", "add", "alice", "--password", "pw", "--users", users],
        dir.path(),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("created"), "{}", stderr(&out));
    let parsed = mqtt_lab::broker::users::Users::load(Path::new(users)).unwrap();
    assert_eq!(parsed.users.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(users).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "password hashes are not for other users");
    }
    // Removing from, or listing, a file that does not exist is an error that names it.
    let missing = dir.path().join("missing.ron");
    let missing = missing.to_str().unwrap();
    let out = run(&["user", "list", "--users", missing], dir.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(missing), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "said once: {err}");
}

#[test]
fn a_file_that_is_not_utf8_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let topics = dir.path().join("topics.ron");
    std::fs::write(&topics, b"(topics: [\n  \"lab/\xff\",\n])\n").unwrap();
    let topics = topics.to_str().unwrap();
    let users = write(dir.path(), "users.ron", "(allow_anonymous: true)");
    let out = run_headless(dir.path(), "0", topics, &users);
    assert_eq!(out.status.code(), Some(1));
    let last = stderr(&out).lines().last().unwrap().to_owned();
    assert_eq!(
        last,
        format!("mqtt-lab: error: {topics}:2:8: not UTF-8 text (byte 0xff)")
    );
}

#[test]
fn a_certificate_that_does_not_parse_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write(dir.path(), "topics.ron", "(topics: [])");
    let users = write(dir.path(), "users.ron", "(allow_anonymous: true)");
    let junk = write(dir.path(), "cert.pem", "not a certificate");
    let out = Command::new(BIN)
        .args([
            "--headless",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--topics",
            &topics,
        ])
        .args(["--users", &users, "--cert", &junk, "--key", &junk])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("mqtt-lab: error: {junk}: ")),
        "{err}"
    );
}

#[test]
fn a_data_folder_holding_a_file_that_is_not_ours_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write(dir.path(), "topics.ron", r#"(topics: ["lab/a"])"#);
    let users = write(
        dir.path(),
        "users.ron",
        "(allow_anonymous: true, users: [])",
    );
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let state = data.join("state.sqlite3");
    std::fs::write(&state, "my notes, not a database\n").unwrap();
    let data = data.to_str().unwrap();
    let out = run_headless_with(dir.path(), "0", &topics, &users, &["--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(
        errors[0].contains(&state.display().to_string()) && errors[0].contains("not an SQLite"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "never listened");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "my notes, not a database\n"
    );
}

/// SUBSCRIBE to `filter` over a blocking socket; returns the SUBACK's return code.
fn suback_code(port: u16, filter: &str) -> u8 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10, 0, 1, b'x',
    ])
    .unwrap();
    let mut ack = [0u8; 4];
    std::io::Read::read_exact(&mut s, &mut ack).unwrap();
    let mut sub = vec![
        0x82,
        (2 + 2 + filter.len() + 1) as u8,
        0,
        1,
        0,
        filter.len() as u8,
    ];
    sub.extend_from_slice(filter.as_bytes());
    sub.push(1);
    s.write_all(&sub).unwrap();
    let mut suback = [0u8; 5];
    std::io::Read::read_exact(&mut s, &mut suback).unwrap();
    suback[4]
}

#[test]
fn topics_mode_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut strict, port) = spawn_headless(dir.path(), &["--no-persistence"]);
    assert_eq!(suback_code(port, "lab/a"), 1);
    assert_eq!(suback_code(port, "not/listed"), 0x80);
    signal(&strict, "-TERM");
    wait_exit(&mut strict);
    let (mut open, port) =
        spawn_headless(dir.path(), &["--no-persistence", "--topics-mode", "open"]);
    assert_eq!(suback_code(port, "not/listed"), 1);
    signal(&open, "-TERM");
    assert_eq!(wait_exit(&mut open).code(), Some(0));
    let out = run(&["--headless", "--topics-mode", "loose"], dir.path(), None);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown mode");
    assert!(stderr(&out).contains("strict"), "{}", stderr(&out));
}

/// A quiet time shorter than a tenth of a second would park and wake a connection between
/// every two packets: refused, with what is allowed.
#[test]
fn a_park_after_too_short_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--headless", "--port", "0", "--park-after", "0.01"])
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("--park-after must be 0 (never) or at least 0.1 seconds"),
        "{err}"
    );
}
