//! `conclave token create`, run as the operator runs it: the printed token verifies with the
//! same key pair and carries what the flags asked for.

use conclave::auth::TokenAuthority;
use conclave_signaling::Role;
use std::process::Command;
use std::time::SystemTime;

fn create(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "token",
            "create",
            "--room",
            "sales-call",
            "--identity",
            "bot-1",
        ])
        .args([
            "--api-key",
            "key-a",
            "--api-secret",
            "secret-of-at-least-32-characters!!",
        ])
        .args(extra)
        .env_remove("CONCLAVE_API_KEY")
        .env_remove("CONCLAVE_API_SECRET")
        .output()
        .expect("conclave runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_agent_token_carries_role_agent_and_others_no_role() {
    let auth = TokenAuthority::new("key-a", "secret-of-at-least-32-characters!!");
    let agent = auth
        .verify(
            &create(&["--agent", "--name", "Ava"]),
            Some("sales-call"),
            SystemTime::now(),
        )
        .expect("agent token verifies");
    assert_eq!(agent.role, Some(Role::Agent));
    assert_eq!(agent.sub, "bot-1");
    assert_eq!(agent.name.as_deref(), Some("Ava"));
    let person = auth
        .verify(&create(&[]), Some("sales-call"), SystemTime::now())
        .expect("token verifies");
    assert_eq!(person.role, None);
    // Another key pair's server refuses it.
    let other = TokenAuthority::new("key-b", "another-secret-of-32-characters!!!");
    assert!(
        other
            .verify(&create(&["--agent"]), Some("sales-call"), SystemTime::now())
            .is_err()
    );
}
