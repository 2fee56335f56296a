//! `aion.v1.AionTasks` over gRPC (cargo feature `grpc`): Submit, Stream
//! and StatusById on the same engine, callers and envelope as the HTTP
//! task API. Served on the API's own port (HTTP/2 without TLS, or behind
//! the platform's TLS proxy), merged into [`crate::http::router`].

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::engine::Options;
use crate::envelope as env;
use crate::error::AionError;
use crate::http::AionApi;

/// The generated messages and service.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]
    tonic::include_proto!("aion.v1");
}

use pb::aion_tasks_server::{AionTasks, AionTasksServer};

fn status(e: AionError) -> Status {
    let message = e.to_string();
    match e.status().as_u16() {
        400 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        402 => Status::resource_exhausted(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::already_exists(message),
        501 => Status::unimplemented(message),
        502 | 503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// The envelope as its message.
pub fn envelope(e: &env::Envelope) -> pb::Envelope {
    pb::Envelope {
        id: e.id.clone(),
        status: e.status.as_str().to_owned(),
        intent: e.intent.clone().unwrap_or_default(),
        output: e.output.as_ref().map(|o| pb::Output { text: o.text.clone(), finish_reason: o.finish_reason.clone().unwrap_or_default() }),
        engine: Some(pb::Engine {
            route: e.engine.route.as_ref().map(|r| pb::Route { model: r.model.clone(), provider: r.provider.clone() }),
            chosen_by: serde_json::to_value(e.engine.chosen_by).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            reason: e.engine.reason.clone(),
            privacy: serde_json::to_value(e.engine.privacy).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            attempts: e
                .engine
                .attempts
                .iter()
                .map(|a| pb::Attempt {
                    model: a.model.clone(),
                    provider: a.provider.clone(),
                    outcome: a.outcome.clone(),
                    error: a.error.clone().unwrap_or_default(),
                    latency_ms: a.latency_ms,
                    streamed: a.streamed,
                })
                .collect(),
            registry: e.engine.registry.clone(),
        }),
        usage: Some(pb::Usage {
            latency_ms: e.usage.latency_ms,
            ttft_ms: e.usage.ttft_ms,
            tokens: Some(pb::Tokens { input: e.usage.tokens.input, output: e.usage.tokens.output, estimated: e.usage.tokens.estimated }),
            cost_usd: e.usage.cost_usd,
            reserved_usd: e.usage.reserved_usd,
        }),
        error: e.error.as_ref().map(|x| pb::Error { code: x.code.clone(), message: x.message.clone() }),
        created_at: e.created_at,
    }
}

struct Service {
    api: AionApi,
}

impl Service {
    async fn caller<T>(&self, req: &Request<T>) -> Result<crate::engine::Caller, Status> {
        let headers = req.metadata().clone().into_headers();
        self.api.verifier.verify(&headers).await.map_err(status)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AionTasks for Service {
    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Result<Response<pb::Envelope>, Status> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let messages: Value = if r.messages.is_empty() {
            if r.input.is_empty() {
                return Err(Status::invalid_argument("give either messages or input"));
            }
            json!([{"role": "user", "content": r.input}])
        } else {
            if !r.input.is_empty() {
                return Err(Status::invalid_argument("give either messages or input, not both"));
            }
            r.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect()
        };
        let mut body = json!({"messages": messages});
        if !r.model.is_empty() {
            body["model"] = r.model.clone().into();
        }
        if let Some(t) = r.max_tokens {
            body["max_tokens"] = t.into();
        }
        if let Some(t) = r.temperature {
            body["temperature"] = t.into();
        }
        let opts = Options {
            intent: (!r.intent.is_empty()).then(|| r.intent.clone()),
            privacy: (!r.privacy.is_empty()).then(|| r.privacy.clone()),
            budget_usd: r.budget_usd,
            continue_on_failure: r.continue_on_failure,
        };
        let key = (!r.idempotency_key.is_empty()).then(|| r.idempotency_key.clone());
        if key.as_ref().is_some_and(|k| k.len() > 255) {
            return Err(Status::invalid_argument("idempotency_key must be at most 255 characters"));
        }
        let (e, _) = self.api.aion.submit(&caller, body, opts, key).await.map_err(status)?;
        Ok(Response::new(envelope(&e)))
    }

    type StreamStream = EventStream;

    async fn stream(&self, req: Request<pb::StreamRequest>) -> Result<Response<Self::StreamStream>, Status> {
        let caller = self.caller(&req).await?;
        let headers = req.metadata().clone().into_headers();
        let id = req.into_inner().id;
        if self.api.aion.subscribe(&caller, &id).is_none() {
            self.api.aion.task(&caller, &id).await.map_err(status)?;
        }
        let events = crate::http::task_events(self.api.clone(), caller, headers, id).map(|ev| {
            let mut out = pb::TaskEvent { event: ev.event.to_owned(), ..Default::default() };
            match ev.event {
                "token" => out.text = ev.data["text"].as_str().unwrap_or_default().to_owned(),
                "done" | "error" => match serde_json::from_value::<env::Envelope>(ev.data.clone()) {
                    Ok(e) => out.envelope = Some(envelope(&e)),
                    Err(_) => out.json = ev.data.to_string(),
                },
                _ => out.json = ev.data.to_string(),
            }
            Ok(out)
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn status_by_id(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::Envelope>, Status> {
        let caller = self.caller(&req).await?;
        let id = req.into_inner().id;
        let e = self.api.aion.task(&caller, &id).await.map_err(status)?;
        Ok(Response::new(envelope(&e)))
    }
}

/// The gRPC service as axum routes (`/aion.v1.AionTasks/*`).
pub fn routes(api: AionApi) -> axum::Router {
    tonic::service::Routes::new(AionTasksServer::new(Service { api }).max_decoding_message_size(crate::http::BODY_LIMIT)).into_axum_router()
}
