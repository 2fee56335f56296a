//! Security review findings #16 (one account could take a host's whole
//! capacity), #11 (unlimited manual snapshots on the shared filesystem) and
//! #21 (a pod's image changed while it starts): real `pinacle up`, real
//! pods, real HTTP.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_is_held_to_its_quota_of_pods_and_running_vcpus() {
    let p = Pinacle::start_default_policy(&[]).await;
    let (_, settings) = p.call(Method::GET, "/api/v1/admin/settings", None).await;
    assert_eq!(settings["quotas"], json!({"user_pods": 10, "user_vcpus": 8, "team_pods": 50, "team_vcpus": 32}), "defaults");
    let (s, _) = p
        .call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"quotas": {"user_pods": 2, "user_vcpus": 1, "team_pods": 3, "team_vcpus": 2}})))
        .await;
    assert_eq!(s, 200);
    let alice = p.signup_and_login("alice").await;
    let create = |name: &'static str, team: Option<&'static str>| {
        let mut body = json!({"name": name, "template": "minimal"});
        if let Some(t) = team {
            body["team"] = json!(t);
        }
        p.call_as(&alice, Method::POST, "/api/v1/pods", Some(body))
    };
    let (s, b) = create("a", None).await;
    assert_eq!(s, 202, "{b}");
    // a second running vCPU is over the quota: refused, nothing created
    let (s, b) = create("b", None).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "quota_exceeded");
    assert!(b["error"]["message"].as_str().unwrap().contains("vCPUs"), "{b}");
    let (_, list) = p.call_as(&alice, Method::GET, "/api/v1/pods", None).await;
    assert_eq!(list["pods"].as_array().unwrap().len(), 1, "{list}");

    // a stopped pod holds no vCPU, but it is still a pod
    p.wait_state_as(&alice, "a", "running", 120).await;
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/pods/a/stop", None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state_as(&alice, "a", "stopped", 120).await;
    let (s, b) = create("b", None).await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = create("c", None).await;
    assert_eq!(s, 429, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("2 pods"), "{b}");
    // starting the stopped pod would run a second vCPU
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/pods/a/start", None).await;
    assert_eq!(s, 429, "{b}");

    // a team's pods count against the team, not the member
    let (s, _) = p.call_as(&alice, Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201);
    for name in ["t1", "t2"] {
        let (s, b) = create(name, Some("acme")).await;
        assert_eq!(s, 202, "{b}");
    }
    let (s, b) = create("t3", Some("acme")).await;
    assert_eq!(s, 429, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().starts_with("the team"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_snapshots_are_bounded_per_pod_and_images_change_only_when_stopped() {
    let p = Pinacle::start().await;
    p.create_running("snap", "minimal", "youki").await;
    // the image cannot change while the pod runs
    let (s, b) = p.call(Method::PATCH, "/api/v1/pods/snap", Some(json!({"image": "base"}))).await;
    assert_eq!(s, 409, "{b}");
    let (s, _) = p.call(Method::POST, "/api/v1/pods/snap/stop", None).await;
    assert_eq!(s, 202);
    p.wait_state("snap", "stopped", 120).await;
    for i in 0..10 {
        let (s, b) = p.call(Method::POST, "/api/v1/pods/snap/snapshots", Some(json!({"name": format!("s{i}")}))).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = p.call(Method::POST, "/api/v1/pods/snap/snapshots", Some(json!({"name": "one too many"}))).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "too_many_snapshots", "{b}");
    let (_, list) = p.call(Method::GET, "/api/v1/pods/snap/snapshots", None).await;
    let snaps = list["snapshots"].as_array().or(list.as_array()).unwrap().clone();
    assert_eq!(snaps.len(), 10, "{list}");
    // deleting one makes room
    let id = snaps[0]["id"].as_str().unwrap();
    let (s, _) = p.call(Method::DELETE, &format!("/api/v1/pods/snap/snapshots/{id}"), None).await;
    assert_eq!(s, 200);
    let (s, b) = p.call(Method::POST, "/api/v1/pods/snap/snapshots", Some(json!({"name": "again"}))).await;
    assert_eq!(s, 201, "{b}");
}
