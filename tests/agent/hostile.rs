//! Hostile clients never disturb the others: malformed requests, an oversized line, a
//! client that never writes, a thousand at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use keyferry::client::Client;
use keyferry::protocol::VERSION;

use crate::kf::{AgentProc, Home};
use crate::{get, home_with_token, Raw, TOKEN, WAIT};

/// Idle connections are dropped after 1 s, so each check below connects afresh.
fn agent() -> (Home, AgentProc) {
    let h = home_with_token("[agent]\nidle_timeout_secs = 1\n");
    let agent = h.start_agent();
    (h, agent)
}

fn good(agent: &AgentProc) -> String {
    get(&mut agent.client()).unwrap()
}

#[test]
fn malformed_requests_get_an_error_and_the_connection_lives_on() {
    let (_h, agent) = agent();
    let mut raw = Raw::connect(&agent.sock);
    raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    assert_eq!(raw.send("{not json")["error"]["code"], "bad_request");
    assert_eq!(
        raw.send(r#"{"op":"format_disk"}"#)["error"]["code"],
        "bad_request"
    );
    assert_eq!(
        raw.send(r#"{"op":"get","name":"claude"}"#)["result"]["token"],
        TOKEN
    );
}

#[test]
fn a_ten_mib_line_is_refused_and_that_connection_closed() {
    let (_h, agent) = agent();
    let big = UnixStream::connect(&agent.sock).unwrap();
    big.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = big.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"\n");
    });
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_line(&mut reply);
    assert!(reply.contains("line_too_long"), "{reply}");
    flood.join().unwrap();
    assert_eq!(good(&agent), TOKEN);
}

#[test]
fn a_client_that_never_writes_is_dropped_after_the_idle_timeout() {
    let (_h, agent) = agent();
    let mut silent = UnixStream::connect(&agent.sock).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(good(&agent), TOKEN, "served while the silent client waits");
    let mut buf = String::new();
    silent.read_to_string(&mut buf).unwrap();
    assert!(buf.contains("idle_timeout"), "{buf}");
}

#[test]
fn a_thousand_concurrent_clients_are_each_served() {
    let (_h, agent) = agent();
    raise_fd_limit();
    let sock = agent.sock.clone();
    let handles: Vec<_> = (0..1000)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock).map_err(|e| e.to_string())?;
                c.set_timeout(Some(WAIT));
                get(&mut c).map_err(|e| e.to_string())
            })
        })
        .collect();
    let results: Vec<Result<String, String>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let failures: Vec<_> = results
        .iter()
        .filter(|r| r.as_deref() != Ok(TOKEN))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 1000 failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(good(&agent), TOKEN);
}

fn raise_fd_limit() {
    // SAFETY: plain rlimit syscalls on our own process.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
