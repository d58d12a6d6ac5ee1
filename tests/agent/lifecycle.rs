//! The agent's life: settings changed at run time, expiry warnings, a second agent refused,
//! kill -9 and restart, clean shutdown, an unsafe socket directory, the user service.

use std::os::unix::fs::PermissionsExt;

use keyferry::client::ClientError;
use keyferry::protocol::Request;

use crate::common::NotificationServer;
use crate::kf::{ok, text, Home};
use crate::{get, home_with_token, TOKEN, WAIT};

#[test]
fn settings_change_at_run_time_and_persist() {
    let h = home_with_token("# my config\n[agent]\nidle_timeout_secs = 9\n");
    let agent = h.start_agent();
    let applied: keyferry::domain::Settings = agent
        .client()
        .call(Request::Settings {
            notifications: Some(false),
            notify_on_access: Some(true),
            expiry_thresholds: Some(vec!["2d".into(), "30m".into()]),
        })
        .unwrap();
    assert_eq!(applied.expiry_thresholds, ["2d", "30m"]);
    let text = std::fs::read_to_string(h.path(".config/keyferry/config.toml")).unwrap();
    assert!(
        text.starts_with("# my config\n[agent]\nidle_timeout_secs = 9\n"),
        "{text}"
    );
    assert!(
        text.contains("notify_on_access = true") && text.contains("\"30m\""),
        "{text}"
    );
    let bad = agent
        .client()
        .call::<keyferry::domain::Settings>(Request::Settings {
            notifications: None,
            notify_on_access: None,
            expiry_thresholds: Some(vec!["soonish".into()]),
        });
    assert!(
        matches!(bad, Err(ClientError::Refused(ref e)) if e.message.contains("soonish")),
        "{bad:?}"
    );
}

#[test]
fn expiry_warnings_reach_the_desktop_and_subscribers() {
    // An access token without its refresh token: nothing on the host will renew it.
    let h = Home::new();
    let soon = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 30 * 60 * 1000;
    h.write(
        ".gemini/oauth_creds.json",
        &format!(r#"{{"access_token":"ya29.GEMINIaccessAAAAbbbbCCCC","scope":"openid","token_type":"Bearer","expiry_date":{soon}}}"#),
        0o600,
    );
    let notifications = NotificationServer::start(h.ss.address());
    let agent = h.start_agent();
    let note = notifications
        .wait("a gemini expiry notification", WAIT, |n| {
            n.contains_all(&["gemini", "expires in"])
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    let (summary, body) = (note.summary, note.body);
    assert!(
        summary.contains("29 min") || summary.contains("30 min"),
        "{summary}"
    );
    assert!(body.contains("keyferry reroll gemini"), "{body}");
    assert!(!format!("{summary}{body}").contains("GEMINIaccess"));
    let st: keyferry::protocol::Status = agent
        .client()
        .call(Request::Status {
            usage: false,
            usage_of: None,
        })
        .unwrap();
    let gemini = st.credentials.iter().find(|c| c.name == "gemini").unwrap();
    assert_eq!(gemini.health, keyferry::domain::Health::Expiring);
}

#[test]
fn a_second_agent_is_refused() {
    let h = home_with_token("");
    let _agent = h.start_agent();
    let out = h.run(&["agent"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another keyferry agent is already serving"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn after_kill_dash_nine_a_restarted_agent_serves() {
    let h = home_with_token("");
    let mut agent = h.start_agent();
    agent.stop(libc::SIGKILL);
    assert!(
        agent.sock.exists(),
        "a killed agent leaves its socket behind"
    );
    let restarted = h.start_agent();
    assert_eq!(get(&mut restarted.client()).unwrap(), TOKEN);
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_the_socket() {
    let h = home_with_token("");
    let mut agent = h.start_agent();
    assert_eq!(get(&mut agent.client()).unwrap(), TOKEN);
    let status = agent.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status:?}: {}", agent.log_text());
    assert!(!agent.sock.exists());
}

#[test]
fn unsafe_socket_directory_is_refused() {
    let h = home_with_token("");
    let dir = h.socket().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = h.run(&["agent"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("chmod 700"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn install_writes_a_user_service() {
    let h = Home::new();
    let (_, err) = ok(&h.run(&["agent", "install"], None, &[]));
    let unit = h.path(".config/systemd/user/keyferry-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={} agent",
            env!("CARGO_BIN_EXE_keyferry")
        )),
        "{text}"
    );
    // The gateway's connection cap is sized from it: systemd's default 1024 is too few.
    assert!(text.contains("LimitNOFILE=65536"), "{text}");
    assert!(err.contains("systemctl --user"), "{err}");
    ok(&h.run(&["agent", "uninstall"], None, &[]));
    assert!(!unit.exists());
}
