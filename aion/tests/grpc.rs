//! `aion.v1.AionTasks` over gRPC, driven by the generated tonic client over
//! HTTP/2 on loopback: Submit, Stream and StatusById on the same tasks as
//! the HTTP API, callers checked the same way.

#![cfg(feature = "grpc")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{fake, router_with, serve};
use futures::StreamExt;
use pinacle_aion::budget::MemoryLedger;
use pinacle_aion::grpc::pb::aion_tasks_client::AionTasksClient;
use pinacle_aion::grpc::pb::{Message, StatusRequest, StreamRequest, SubmitRequest};
use tonic::Request;

fn authed<T>(msg: T, who: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {who}").parse().unwrap());
    r
}

#[tokio::test]
async fn tasks_are_submitted_streamed_and_read_over_grpc() {
    let local = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let models = format!("providers:\n  local:\n    kind: openai\n    url: {}/v1\n    cloud: false\nmodels:\n  ok:\n    provider: local\n    upstream: \"slow-tokens:6\"\n    tier: local\n    price: {{input: 1, output: 2}}\n", local.url());
    let intents = "intents:\n  chat:\n    default_route: ok\n    privacy: local-only\n";
    let aion = router_with([Some(&models), Some(intents), Some("default_intent: chat\n"), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    let mut client = AionTasksClient::connect(s.url.clone()).await.unwrap();

    let e = client.submit(Request::new(SubmitRequest { input: "hi".into(), ..Default::default() })).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = client.submit(authed(SubmitRequest::default(), "user:g")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let req = SubmitRequest { messages: vec![Message { role: "user".into(), content: "hello".into() }], idempotency_key: "g-1".into(), ..Default::default() };
    let accepted = client.submit(authed(req.clone(), "user:g")).await.unwrap().into_inner();
    assert_eq!(accepted.status, "running");
    assert_eq!(accepted.engine.as_ref().unwrap().chosen_by, "default_route");
    let again = client.submit(authed(req, "user:g")).await.unwrap().into_inner();
    assert_eq!(again.id, accepted.id, "the same idempotency key is the same task");

    let mut events = client.stream(authed(StreamRequest { id: accepted.id.clone() }, "user:g")).await.unwrap().into_inner();
    let mut text = String::new();
    let mut last = None;
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        if ev.event == "token" {
            text.push_str(&ev.text);
        }
        last = Some(ev);
    }
    assert_eq!(text, common::words(6).concat());
    let done = last.unwrap();
    assert_eq!(done.event, "done");
    let env = done.envelope.unwrap();
    assert_eq!(env.status, "succeeded");
    assert_eq!(env.output.unwrap().text, text);
    assert_eq!(env.usage.unwrap().tokens.unwrap().output, 6);

    let status = client.status_by_id(authed(StatusRequest { id: accepted.id.clone() }, "user:g")).await.unwrap().into_inner();
    assert_eq!(status.status, "succeeded");
    let e = client.status_by_id(authed(StatusRequest { id: accepted.id.clone() }, "user:other")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "another caller's task is absent");
    let e = client.stream(authed(StreamRequest { id: accepted.id }, "user:other")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}
