//! Exposed ports: the API, host routing to `PORT-NAME.<base_domain>` on the
//! daemon's own listen address (no DNS), token and cookie auth, label
//! conflicts across owners. Traffic goes only to the daemon on loopback
//! and to sandboxes these tests create.

mod common;

use common::Daemon;
use reqwest::Method;
use serde_json::{json, Value};

const BASE: &str = "127-0-0-1.sslip.io";

/// The host of port `port` of sandbox `name`, with the daemon's port.
fn host(d: &Daemon, port: u16, name: &str) -> String {
    let listen_port = d.url.rsplit(':').next().unwrap();
    format!("{port}-{name}.{BASE}:{listen_port}")
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET `path` on exposure host `host` (through the daemon's address).
async fn via(
    d: &Daemon,
    host: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = no_redirects().get(d.u(path)).header("host", host);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

async fn create_as(d: &Daemon, token: &str, name: &str) {
    let (_, imgs) = d.get("/v1/images").await;
    if !imgs["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "mini")
    {
        d.build_image("mini", "busybox").await;
    }
    let (st, v) = d
        .call_as(
            token,
            Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": name, "image": "mini"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
}

#[tokio::test]
async fn expose_list_update_unexpose_and_validation() {
    let d = Daemon::start().await;
    d.sandbox("web", json!({})).await;
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let listen_port = d.url.rsplit(':').next().unwrap();
    let url = format!("http://8080-web.{BASE}:{listen_port}");
    assert_eq!(v, json!({"port": 8080, "public": false, "url": url}));
    let (st, v) = d
        .post(
            "/v1/sandboxes/web/ports",
            json!({"port": 8080, "public": true}),
        )
        .await;
    assert_eq!(
        (st, &v["public"]),
        (200, &json!(true)),
        "re-posting updates"
    );
    let (st, v) = d.get("/v1/sandboxes/web/ports").await;
    assert_eq!(st, 200);
    assert_eq!(v["ports"].as_array().unwrap().len(), 1, "{v}");
    // The sandbox views carry the exposures with their URLs.
    let (_, show) = d.get("/v1/sandboxes/web").await;
    assert_eq!(show["exposures"][0]["url"], url, "{show}");
    let (_, ls) = d.get("/v1/sandboxes").await;
    let web = ls["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap();
    assert_eq!(web["exposures"][0]["port"], 8080);

    for bad in [
        json!({"port": 0}),
        json!({"port": 65536}),
        json!({"port": "80"}),
        json!({"port": 80, "public": null}),
        json!({"port": 80, "extra": 1}),
        json!({}),
    ] {
        let (st, v) = d.post("/v1/sandboxes/web/ports", bad.clone()).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let (st, _) = d
        .post("/v1/sandboxes/nope/ports", json!({"port": 80}))
        .await;
    assert_eq!(st, 404);

    let d = &d;
    let del = |p: &str| {
        let path = format!("/v1/sandboxes/web/ports/{p}");
        async move { d.req(Method::DELETE, &path, None).await }
    };
    assert_eq!(del("8080").await.0, 204);
    let (st, v) = del("8080").await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(del("0").await.0, 400);
    assert_eq!(del("x").await.0, 400);
    let (_, v) = d.get("/v1/sandboxes/web/ports").await;
    assert_eq!(v["ports"], json!([]));
    // Unexposed: the host serves nothing, to the owner too.
    let r = via(d, &host(d, 8080, "web"), "/", Some(&d.token), &[]).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn hosts_are_private_to_their_owner_and_labels_are_global() {
    let d = Daemon::start().await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    create_as(&d, &alice, "dev").await;
    create_as(&d, &bob, "dev").await;
    let (st, v) = d
        .call_as(
            &alice,
            Method::POST,
            "/v1/sandboxes/dev/ports",
            Some(json!({"port": 8080})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    // Bob's `dev` is another sandbox, but 8080-dev is one host: taken.
    let (st, v) = d
        .call_as(
            &bob,
            Method::POST,
            "/v1/sandboxes/dev/ports",
            Some(json!({"port": 8080})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("8080-dev") && msg.contains("another user"),
        "{msg}"
    );
    let (st, _) = d
        .call_as(
            &bob,
            Method::POST,
            "/v1/sandboxes/dev/ports",
            Some(json!({"port": 9090})),
        )
        .await;
    assert_eq!(st, 201);

    let h = host(&d, 8080, "dev");
    let unknown = host(&d, 1234, "dev");
    // No token: 401 whether or not the host is exposed (nothing leaks).
    for hh in [&h, &unknown] {
        let r = via(&d, hh, "/", None, &[]).await;
        assert_eq!(r.status(), 401, "{hh}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    assert_eq!(via(&d, &h, "/", Some("icl_wrong"), &[]).await.status(), 401);
    // Another user's token: the 404 of a host nobody exposed.
    let r = via(&d, &h, "/", Some(&bob), &[]).await;
    assert_eq!(r.status(), 404);
    let r2 = via(&d, &unknown, "/", Some(&bob), &[]).await;
    assert_eq!(r2.status(), 404);
    let (a, b): (Value, Value) = (r.json().await.unwrap(), r2.json().await.unwrap());
    assert_eq!(a["error"]["code"], b["error"]["code"]);
    // The owner and the admin get through the gate (the sandbox has no
    // network card here: 503 saying so, not an auth answer).
    for t in [&alice, &d.token] {
        let r = via(&d, &h, "/", Some(t), &[]).await;
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("no network"));
    }
    // A malformed label under the base domain is nobody's API.
    let listen_port = d.url.rsplit(':').next().unwrap();
    let r = via(
        &d,
        &format!("v1.{BASE}:{listen_port}"),
        "/v1/health",
        None,
        &[],
    )
    .await;
    assert_eq!(r.status(), 404);
    // The API itself still answers on the plain address.
    assert_eq!(d.get("/v1/health").await.0, 200);
}

#[tokio::test]
async fn browsers_log_in_with_a_cookie_for_one_host() {
    let d = Daemon::start().await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    create_as(&d, &alice, "app").await;
    for port in [8080, 9090] {
        let (st, _) = d
            .call_as(
                &alice,
                Method::POST,
                "/v1/sandboxes/app/ports",
                Some(json!({"port": port})),
            )
            .await;
        assert_eq!(st, 201);
    }
    let h = host(&d, 8080, "app");
    let html = [("accept", "text/html,application/xhtml+xml")];
    let r = via(&d, &h, "/some/page?x=1", None, &html).await;
    assert_eq!(r.status(), 302);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, "/.ironclaw/login?next=/some/page%3Fx%3D1");
    // The login page without a token is a form; a wrong token a 401.
    let r = via(&d, &h, "/.ironclaw/login", None, &[]).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("<form"));
    let r = via(&d, &h, "/.ironclaw/login?token=icl_nope", None, &[]).await;
    assert_eq!(r.status(), 401);
    // The owner's token, once: a host-only HttpOnly cookie and back to next.
    let r = via(
        &d,
        &h,
        &format!("/.ironclaw/login?token={alice}&next=/some/page"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/some/page");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
    assert!(
        !set.to_ascii_lowercase().contains("domain="),
        "host-only: {set}"
    );
    assert!(!set.contains(&alice), "the token itself is not the cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    // The cookie opens this host (503: no network card here, past the gate)...
    let r = via(&d, &h, "/", None, &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), 503);
    // ...not the next port's host, and not after tampering.
    let r = via(
        &d,
        &host(&d, 9090, "app"),
        "/",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status(), 401);
    let forged = cookie.replacen("alice", "bob", 1);
    assert_eq!(
        via(&d, &h, "/", None, &[("cookie", &forged)])
            .await
            .status(),
        401
    );
    // A POSTed form works the same; no open redirect to another site.
    let r = no_redirects()
        .post(d.u("/.ironclaw/login"))
        .header("host", &h)
        .form(&[("token", bob.as_str()), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    // Bob logged in, but this is not his sandbox: 404.
    let bob_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        via(&d, &h, "/", None, &[("cookie", &bob_cookie)])
            .await
            .status(),
        404
    );
    // Revoking the token that logged in ends its cookie too.
    let (st, v) = d.req(Method::DELETE, "/v1/users/alice/tokens", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        via(&d, &h, "/", None, &[("cookie", &cookie)])
            .await
            .status(),
        401,
        "a revoked token's cookie still opened the port"
    );
}

#[tokio::test]
async fn ports_are_served_over_https_with_a_self_signed_certificate() {
    let d = Daemon::start_with("ports_tls_listen = \"127.0.0.1:0\"\n").await;
    d.sandbox("web", json!({})).await;
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let name = format!("8080-web.{BASE}");
    let prefix = format!("https://{name}:");
    let tls_port: u16 = url.strip_prefix(&prefix).expect(&url).parse().unwrap();
    assert!(d.data_dir().join("ports-tls.pem").exists());
    // The wildcard name resolves to the daemon here without DNS.
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(&name, ([127, 0, 0, 1], tls_port).into())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&url).bearer_auth(&d.token).send().await.unwrap();
    assert_eq!(
        r.status(),
        503,
        "past the gate: this sandbox has no network"
    );
    let r = c
        .get(format!("{url}/.ironclaw/login?token={}", d.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
}
