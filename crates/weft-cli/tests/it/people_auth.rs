//! The people-and-browsers pieces with authentication on: the dashboard
//! session carries a real token (and stops with its revocation), actors are
//! token names with `on_behalf_of`, and token changes reach the audit log.

use std::time::Duration;

use serde_json::{Value, json};
use weft_client::Client;

use crate::harness::{Env, browser_client, wait_until};

const ADMIN: &str = "bootstrap-admin-token-for-the-people-suite-0123456789";
const PEPPER: &str = "a people-suite pepper of at least sixteen bytes";

/// The `value` of the hidden `csrf` field of a page's form.
fn hidden_csrf(page: &str) -> String {
    let key = "name=\"csrf\" value=\"";
    let at = page
        .find(key)
        .unwrap_or_else(|| panic!("no csrf field in:\n{page}"));
    let rest = &page[at + key.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Signs in through the form; answers the `Set-Cookie` headers and status.
async fn sign_in(http: &reqwest::Client, url: &str, token: &str) -> (u16, Vec<String>) {
    let form = http.get(format!("{url}/signin")).send().await.unwrap();
    let nonce_cookie: String = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("weft_signin="))
        .expect("a nonce cookie");
    let nonce = hidden_csrf(&form.text().await.unwrap());
    let answer = http
        .post(format!("{url}/signin"))
        .header("cookie", nonce_cookie.split(';').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&csrf={nonce}"))
        .send()
        .await
        .unwrap();
    let cookies = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (answer.status().as_u16(), cookies)
}

pub async fn sessions_and_actors_with_tokens(db_url: String) {
    let mut env = Env::start_with_env(
        &db_url,
        &["--auth", "required", "--token-cache", "300ms"],
        &[
            ("WEFT_BOOTSTRAP_TOKEN", ADMIN),
            ("WEFT_TOKEN_PEPPER", PEPPER),
        ],
    )
    .await;
    env.client = Client::new(&env.server.url).with_token(Some(ADMIN.to_owned()));
    env.register("name: gate\nsteps:\n  - {name: ok, kind: approval}\n")
        .await;
    let operator = env
        .client
        .create_token(&weft_api::CreateTokenRequest {
            name: "ops-ci".into(),
            role: "operator".into(),
            queues: None,
            expires_in_seconds: None,
        })
        .await
        .expect("create a token")
        .token;
    let url = env.server.url.clone();
    let browser = browser_client();

    // A token that is not valid does not sign in.
    let (status, cookies) = sign_in(&browser, &url, "weft_nope_nope").await;
    assert_eq!(status, 401);
    assert!(
        cookies.iter().all(|c| !c.starts_with("weft_session=")),
        "{cookies:?}"
    );

    let (status, cookies) = sign_in(&browser, &url, &operator).await;
    assert_eq!(status, 303);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("weft_session="))
        .expect("a session cookie");
    let cookie = session.split(';').next().unwrap().to_owned();

    // Reads with the cookie; none without.
    let read = |cookie: Option<String>| {
        let mut request = browser.get(format!("{url}/v1/runs"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    assert_eq!(read(None).await.unwrap().status().as_u16(), 401);
    // A browser asking for a dashboard page without a session goes to sign in.
    let dashboard = |cookie: Option<String>| {
        let mut request = browser
            .get(format!("{url}/"))
            .header("accept", "text/html,*/*;q=0.8");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let bounced = dashboard(None).await.unwrap();
    assert_eq!(bounced.status().as_u16(), 303);
    assert_eq!(bounced.headers()["location"], "/signin");
    assert_eq!(
        dashboard(Some(cookie.clone()))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        read(Some(cookie.clone())).await.unwrap().status().as_u16(),
        200
    );

    // A write with the cookie and its CSRF token, recorded as the token's name.
    let run = env.start_run("gate", json!({})).await;
    let page = browser
        .get(format!("{url}/signin"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Signed in as <b>ops-ci</b> (operator)"),
        "{page}"
    );
    let csrf = hidden_csrf(&page);
    let refused = browser
        .post(format!("{url}/v1/runs/{run}/cancel"))
        .header("cookie", &cookie)
        .header("x-weft-client", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let cancelled = browser
        .post(format!("{url}/v1/runs/{run}/cancel"))
        .header("cookie", &cookie)
        .header("x-weft-csrf", &csrf)
        .header("x-weft-actor", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status().as_u16(), 200);
    let events = env.client.run_events(&run, None).await.unwrap().events;
    let event = events.iter().find(|e| e.kind == "run.cancelled").unwrap();
    assert_eq!(event.data["actor"], "ops-ci");
    assert_eq!(event.data["on_behalf_of"], "alice");
    let created = events.iter().find(|e| e.kind == "run.created").unwrap();
    assert_eq!(created.data["actor"], "bootstrap");

    // Revoked: the session stops working within the token cache's time.
    env.client.revoke_token("ops-ci").await.expect("revoke");
    wait_until(
        "the revoked session to be refused",
        Duration::from_secs(10),
        || {
            let read = read(Some(cookie.clone()));
            async move { (read.await.unwrap().status().as_u16() == 401).then_some(()) }
        },
    )
    .await;

    // Its page is sent to sign in again, the stale cookie cleared.
    let stale = dashboard(Some(cookie.clone())).await.unwrap();
    assert_eq!(stale.status().as_u16(), 303);
    let cleared: Vec<&str> = stale
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("weft_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );

    // Token changes are in the audit log, by the bootstrap admin.
    let audit: Value = env
        .http
        .get(format!("{url}/v1/audit?actor=bootstrap"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["token.revoked", "token.created", "workflow.registered"]
    );
    assert_eq!(audit["entries"][1]["detail"]["role"], "operator");
}
