//! Running a task: decide, reserve the worst case, call the routes in
//! order, stream with a first-chunk gate, fall back, bill, settle, record.
//!
//! **The first-chunk gate.** Nothing reaches the client until an upstream
//! has sent a chunk with content (or its end): a refusal, a reset, a
//! malformed or empty start, or no first token within the policy's time
//! all fall through to the next candidate (after the provider's own
//! `Retry-After` when it is short enough), and the client never knows.
//! After that, a failure either goes on with the next candidate (opt-in,
//! at most once, the partial output sent along so the answer continues) or
//! ends the task with an explicit error: a cut stream is never a success.
//!
//! **Billing.** Usage is asked from every provider (`include_usage`).
//! What a provider never reported (a cut stream, a client that left) is
//! estimated from the text and marked so. Attempts that failed before
//! their first chunk cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::Instrument;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::budget::{Charge, Ledger};
use crate::cost::{self, Tokens};
use crate::decide::{self, Ask, Decision, Route};
use crate::envelope::{Attempt, Engine, Envelope, ErrorBody, Output, Status, Usage};
use crate::error::AionError;
use crate::health::Health;
use crate::metrics::{AionMetrics, ModelLabel, Outcome};
use crate::provider::{self, Event, ProviderError, Upstreams};
use crate::registries::{Loaded, Registries};
use crate::registry::{Model, Privacy, Provider};
use crate::store::{Store, TaskRow};

/// Who is calling, as the platform verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Whose tasks these are: `user:<id>`.
    pub subject: String,
    pub user_id: String,
    /// The team a team pod's calls are charged to.
    pub team_id: Option<String>,
    /// The API key or pod token (`token:<id>`, `pod:<id>`); none for a
    /// sign-in session.
    pub key_id: Option<String>,
    pub admin: bool,
    /// Whether the user's own budget is charged (not for a team pod's
    /// calls, which the team's budget pays).
    pub user_budget: bool,
}

impl Caller {
    /// The budgets that apply to this caller's calls at `now`.
    pub fn budgets(&self, b: &crate::registry::Budgets, now: chrono::DateTime<chrono::Utc>) -> Vec<(&'static str, Charge)> {
        crate::budget::applicable(b, self.user_budget.then_some(self.user_id.as_str()), self.team_id.as_deref(), self.key_id.as_deref(), now)
    }

    /// The subjects the policy's lists may name.
    pub fn subjects(&self) -> Vec<String> {
        let mut s = vec![format!("user:{}", self.user_id)];
        if let Some(t) = &self.team_id {
            s.push(format!("team:{t}"));
        }
        s
    }
}

/// Where a caller's own provider keys come from (their platform secrets).
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// The value of secret `name` of `caller` (their team's for a team
    /// pod), if set.
    async fn key(&self, caller: &Caller, name: &str) -> Option<String>;
}

/// No per-caller keys: the server's own only.
pub struct NoKeys;

#[async_trait::async_trait]
impl KeySource for NoKeys {
    async fn key(&self, _: &Caller, _: &str) -> Option<String> {
        None
    }
}

/// The router's own request options (`"aion": {...}` in a chat request's
/// body, or a task's fields).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub intent: Option<String>,
    /// `local-only`, `hybrid`, `allow-api`: only tightens.
    #[serde(default)]
    pub privacy: Option<String>,
    /// This task's cap (up to the policy's hard cap).
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// Go on with the next candidate after a failure mid-stream.
    #[serde(default)]
    pub continue_on_failure: Option<bool>,
}

/// A chat request's answer.
pub enum Chat {
    /// OpenAI's `chat.completion`, with `aion`.
    Whole(Value),
    /// The task's output as it comes.
    Stream(mpsc::Receiver<Out>),
}

/// What flows from a running task to its client.
#[derive(Debug, Clone)]
pub enum Out {
    /// OpenAI's delta, with the model that produced it.
    Delta { delta: Value, finish_reason: Option<String>, model: String },
    /// A stream failed after output and goes on with the next route; the
    /// text so far is carried.
    Partial { text: String, failed: Route, next: Route },
    /// The end: succeeded, failed or cancelled.
    Done(Box<Envelope>),
}

struct PlannedRoute {
    route: Route,
    provider: Provider,
    model: Model,
    max_out: u32,
}

/// A task ready to run: decided, and its worst case reserved.
pub struct Plan {
    loaded: Arc<Loaded>,
    decision: Decision,
    routes: Vec<PlannedRoute>,
    body: Value,
    prompt_tokens_estimate: u64,
    hold: Option<(String, Vec<String>)>,
    reserved: i64,
    continue_on_failure: bool,
    caller: Caller,
    pub task_id: String,
    created_at: i64,
    started: Instant,
    api: &'static str,
}

impl Plan {
    /// The task's tracing span (its attempts are spans inside it).
    fn span(&self) -> tracing::Span {
        let first = self.decision.routes.first();
        tracing::info_span!(
            "aion.task",
            task = %self.task_id,
            api = self.api,
            intent = self.decision.intent.as_deref().unwrap_or(""),
            route = first.map_or("", |r| r.model.as_str()),
            chosen_by = ?self.decision.chosen_by,
        )
    }
}

/// How long a budget hold outlives its last sign of life (a server that
/// died mid-call leaves it to the sweep).
const HOLD_SECS: i64 = 600;

/// How often a running stream extends its hold.
const HOLD_EXTEND_EVERY: Duration = Duration::from_secs(60);

/// Bytes of token events kept per live task for late subscribers (the end
/// event carries the whole answer anyway).
const TASK_EVENT_BYTES: usize = 4 << 20;

/// Live tasks kept in this process after they end (for their stream and
/// status), at most this many.
const LIVE_TASKS: usize = 10_000;

/// Events kept per live task for late subscribers.
const TASK_EVENTS: usize = 100_000;

/// One event of a task's stream (`/v1/stream/{id}`, WebSocket, gRPC).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskEvent {
    /// `token`, `partial`, `done`, `error`.
    pub event: &'static str,
    pub data: Value,
}

/// Live tasks by id, and their ids oldest first.
type LiveTasks = (HashMap<String, Arc<Mutex<LiveTask>>>, VecDeque<String>);

struct LiveTask {
    subject: String,
    events: Vec<TaskEvent>,
    /// Bytes of token text in `events`.
    bytes: usize,
    tx: broadcast::Sender<TaskEvent>,
    envelope: Option<Envelope>,
}

/// The router.
pub struct Aion {
    pub registries: Registries,
    pub health: Health,
    ledger: Arc<dyn Ledger>,
    store: Option<Store>,
    upstreams: Upstreams,
    keys: Arc<dyn KeySource>,
    pub metrics: AionMetrics,
    live: Mutex<LiveTasks>,
    records: Option<mpsc::Sender<TaskRow>>,
}

impl Aion {
    /// A router on `registries`, keeping budgets in `ledger` and task
    /// records in `store` (written in batches by a background writer).
    pub fn new(registries: Registries, ledger: Arc<dyn Ledger>, store: Option<Store>, keys: Arc<dyn KeySource>) -> Arc<Self> {
        Self::with_metrics(registries, ledger, store, keys, AionMetrics::default())
    }

    /// [`Aion::new`] counting into `metrics` (registered by the server).
    pub fn with_metrics(registries: Registries, ledger: Arc<dyn Ledger>, store: Option<Store>, keys: Arc<dyn KeySource>, metrics: AionMetrics) -> Arc<Self> {
        let records = store.clone().map(|s| {
            let (tx, rx) = mpsc::channel(8192);
            tokio::spawn(write_records(s, rx));
            tx
        });
        Arc::new(Self {
            registries,
            health: Health::default(),
            ledger,
            store,
            upstreams: Upstreams::new(),
            keys,
            metrics,
            live: Mutex::new((HashMap::new(), VecDeque::new())),
            records,
        })
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Decides and reserves. Nothing is reserved when it fails.
    pub async fn plan(&self, caller: &Caller, mut body: Value, opts: Options, api: &'static str, stream: bool) -> Result<Plan, AionError> {
        check_chat_body(&body)?;
        let loaded = self.registries.current();
        let reg = &loaded.registry;
        let privacy = match opts.privacy.as_deref() {
            None => None,
            Some(p) => Some(Privacy::parse(p).ok_or_else(|| AionError::bad("invalid_privacy", format!("privacy {p:?} is not one of {}", Privacy::NAMES.join(", "))))?),
        };
        let subjects = caller.subjects();
        let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
        let ask = Ask { model: model.as_deref(), intent: opts.intent.as_deref(), privacy, subjects: &subjects };
        let mut decision = decide::decide(reg, &ask, &self.health, Instant::now())?;

        // the intent's modules see (and may change or refuse) the input first
        if let Some(intent) = decision.intent.as_ref().and_then(|i| reg.intents.get(i)) {
            for name in &intent.modules {
                let module = loaded.modules.get(name).cloned().ok_or_else(|| AionError::Module(format!("module {name} is not loaded")))?;
                let input = json!({"intent": intent.id, "messages": body["messages"].clone()});
                let out = tokio::task::spawn_blocking(move || module.call(&input)).await.map_err(|e| AionError::Module(e.to_string()))?.map_err(AionError::Module)?;
                if let Some(why) = out.get("refuse").and_then(Value::as_str) {
                    return Err(AionError::bad("refused_by_module", format!("module {name} refused this task: {why}")));
                }
                match out.get("messages") {
                    Some(m) if m.is_array() => body["messages"] = m.clone(),
                    _ => return Err(AionError::Module(format!("module {name} answered neither messages nor refuse"))),
                }
            }
            check_chat_body(&body)?;
        }

        // the prompt's bound, for the worst case
        let messages = body.get("messages").and_then(Value::as_array).map_or(0, Vec::len);
        // everything forwarded counts (tools, response formats...), and each
        // image part at a bound of its own: its URL's bytes say nothing
        let forwarded = {
            let mut b = body.clone();
            if let Some(o) = b.as_object_mut() {
                o.remove("aion");
            }
            b.to_string().len()
        };
        let images = body
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|p| p.get("type").and_then(Value::as_str).is_some_and(|t| t != "text"))
            .count() as u64;
        let input_bound = cost::input_tokens_bound(forwarded, messages) + images * cost::IMAGE_TOKENS_BOUND;
        let prompt_text: usize = body.get("messages").and_then(Value::as_array).into_iter().flatten().map(|m| provider::content_text(m.get("content")).len()).sum();
        let asked_out = body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(Value::as_u64);

        let task_cap = match (&reg.policy.budgets.task, opts.budget_usd) {
            (Some(b), Some(asked)) => Some(cost::usd_to_micros(asked.min(b.hard_cap_usd))),
            (Some(b), None) => Some(cost::usd_to_micros(b.default_usd.unwrap_or(b.hard_cap_usd))),
            (None, Some(asked)) => Some(cost::usd_to_micros(asked)),
            (None, None) => None,
        };
        if opts.budget_usd.is_some_and(|b| !b.is_finite() || b < 0.0) {
            return Err(AionError::bad("invalid_budget", "budget_usd must be a number of dollars, 0 or more"));
        }
        let mut routes = Vec::with_capacity(decision.routes.len());
        let mut worst = Vec::with_capacity(decision.routes.len());
        for r in &decision.routes {
            let model = reg.models[&r.model].clone();
            let provider = reg.providers[&r.provider].clone();
            let cap = decision.max_output.unwrap_or(model.max_output).min(model.max_output);
            let max_out = asked_out.map_or(cap, |a| (a.min(u64::from(cap))) as u32).max(1);
            let w = cost::cost_micros(model.price, input_bound, u64::from(max_out));
            if let Some(cap) = task_cap {
                if w > cap {
                    decision.skipped.push((r.model.clone(), format!("its worst case ${:.6} is over the task's budget ${:.6}", cost::micros_to_usd(w), cost::micros_to_usd(cap))));
                    continue;
                }
            }
            worst.push(w);
            routes.push(PlannedRoute { route: r.clone(), provider, model, max_out });
        }
        if routes.is_empty() {
            self.metrics.budget_refusals.inc();
            let why = decision.skipped.iter().map(|(m, w)| format!("{m}: {w}")).collect::<Vec<_>>().join("; ");
            return Err(AionError::Budget(format!("no candidate fits this task's budget: {why}")));
        }
        decision.routes = routes.iter().map(|r| r.route.clone()).collect();
        // one route's worst case; two when a stream may go on with a second
        // (only a stream continues, and only while both fit the task's cap)
        let mut sorted = worst.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let two = sorted[0] + sorted.get(1).copied().unwrap_or(0);
        let continue_on_failure = stream
            && opts.continue_on_failure.unwrap_or(reg.policy.stream.continue_on_failure)
            && routes.len() > 1
            && task_cap.is_none_or(|cap| two <= cap);
        let reserved = if continue_on_failure { two } else { sorted[0] };

        let now = chrono::Utc::now();
        let charges: Vec<Charge> = caller.budgets(&reg.policy.budgets, now).into_iter().map(|(_, c)| c).collect();
        let hold = if charges.is_empty() {
            None
        } else {
            let longest = routes.iter().map(|r| r.provider.timeout_ms).max().unwrap_or(120_000);
            let hold_secs = (longest / 1000) as i64 * 2 + HOLD_SECS;
            match self.ledger.reserve(&charges, reserved, hold_secs).await {
                Ok(id) => Some((id, charges.into_iter().map(|c| c.scope).collect())),
                Err(e) => {
                    self.metrics.budget_refusals.inc();
                    return Err(e.into());
                }
            }
        };
        if let Some(o) = body.as_object_mut() {
            o.remove("aion");
        }
        Ok(Plan {
            loaded: loaded.clone(),
            decision,
            routes,
            body,
            prompt_tokens_estimate: (prompt_text as u64).div_ceil(4) + 4 * messages as u64,
            hold,
            reserved,
            continue_on_failure,
            caller: caller.clone(),
            task_id: format!("task_{}", uuid::Uuid::now_v7().simple()),
            created_at: now.timestamp_millis(),
            started: Instant::now(),
            api,
        })
    }

    /// The key for `p`: the caller's own (`true`) or the server's.
    async fn key_for(&self, plan: &Plan, p: &Provider) -> (Option<String>, bool) {
        if let Some(secret) = &p.api_key_secret {
            if let Some(k) = self.keys.key(&plan.caller, secret).await {
                return (Some(k), true);
            }
        }
        (plan.loaded.env_keys.get(&p.id).cloned(), false)
    }

    /// Records a call that failed before it answered: metrics, the
    /// provider's health, the task's attempts.
    fn failed_before_answer(&self, r: &PlannedRoute, e: &ProviderError, took: Duration, own_key: bool, breaker: &crate::registry::Breaker, attempts: &mut Vec<Attempt>) {
        self.metrics.upstream(&r.provider.id, e.code());
        self.blame(&r.provider.id, e, own_key, breaker);
        attempts.push(failed(r, e, took, false));
    }

    /// Counts a failure against `provider`'s health, unless it says only
    /// that a caller's own key was refused or is out of quota (one user's
    /// bad key must not close a provider for everyone).
    fn blame(&self, provider: &str, e: &ProviderError, own_key: bool, breaker: &crate::registry::Breaker) {
        if !e.counts_against_provider() || (own_key && e.is_about_the_key()) {
            self.health.release_probe(provider);
            return;
        }
        let retry_after = if own_key { None } else { e.retry().flatten() };
        self.health.failure(provider, breaker, retry_after, Instant::now());
    }

    /// The upstream body for route `r`, with `carried` output to continue.
    fn upstream_body(plan: &Plan, r: &PlannedRoute, carried: &str) -> Value {
        let mut b = plan.body.clone();
        b["model"] = r.model.upstream.clone().into();
        let out = if carried.is_empty() { r.max_out } else { (r.max_out as u64).saturating_sub(cost::estimate_tokens(carried)).max(1) as u32 };
        if let Some(o) = b.as_object_mut() {
            // every cap the client sent is the planned one (a server reads
            // either); none sent: OpenAI's current field
            let mut set = false;
            for field in ["max_completion_tokens", "max_tokens"] {
                if o.contains_key(field) {
                    o.insert(field.into(), out.into());
                    set = true;
                }
            }
            if !set {
                o.insert("max_completion_tokens".into(), out.into());
            }
        }
        if !carried.is_empty() {
            if let Some(m) = b.get_mut("messages").and_then(Value::as_array_mut) {
                m.push(json!({"role": "assistant", "content": carried}));
                m.push(json!({"role": "user", "content": "Your answer was cut off. Continue exactly where it stopped, without repeating anything."}));
            }
        }
        b
    }

    /// A whole answer (no streaming): the routes in order until one answers.
    pub async fn complete(self: &Arc<Self>, plan: Plan) -> Result<(Result<Value, AionError>, Envelope), AionError> {
        let span = plan.span();
        let me = self.clone();
        // its own task: a client that leaves does not cut the settlement short
        tokio::spawn(async move { me.complete_inner(plan).instrument(span).await }).await.map_err(|e| AionError::Internal(format!("the task stopped: {e}")))
    }

    /// Plans and runs a chat request in a task of its own (a client that
    /// leaves mid-way cannot leave a reservation unsettled): a whole
    /// answer, or the stream's receiver.
    pub async fn chat(self: &Arc<Self>, caller: Caller, body: Value, opts: Options, stream: bool) -> Result<(String, Chat), AionError> {
        let me = self.clone();
        tokio::spawn(async move {
            let plan = me.plan(&caller, body, opts, "chat", stream).await?;
            let task = plan.task_id.clone();
            if stream {
                Ok((task, Chat::Stream(me.start_stream(plan))))
            } else {
                let span = plan.span();
                let (answer, _) = me.complete_inner(plan).instrument(span).await;
                Ok((task, Chat::Whole(answer?)))
            }
        })
        .await
        .map_err(|e| AionError::Internal(format!("the task stopped: {e}")))?
    }

    async fn complete_inner(&self, plan: Plan) -> (Result<Value, AionError>, Envelope) {
        self.metrics.in_flight.inc();
        let policy = plan.loaded.registry.policy.clone();
        let mut attempts = Vec::new();
        let mut result: Result<(Value, &PlannedRoute, Tokens), AionError> = Err(AionError::Upstream("no route was tried".into()));
        'routes: for r in &plan.routes {
            let (key, own_key) = self.key_for(&plan, &r.provider).await;
            let body = Self::upstream_body(&plan, r, "");
            for attempt in 0..=policy.retries.max {
                if let Err(a) = self.health.admit(&r.provider.id, Instant::now()) {
                    attempts.push(skipped(r, format!("{a:?}").to_lowercase()));
                    continue 'routes;
                }
                let t0 = Instant::now();
                let call = self.upstreams.complete(&r.provider, key.as_deref(), &body);
                match call.instrument(tracing::info_span!("aion.upstream", provider = %r.provider.id, model = %r.model.id, attempt)).await {
                    Ok(c) => {
                        let took = t0.elapsed();
                        self.health.success(&r.provider.id, took);
                        self.metrics.upstream(&r.provider.id, "ok");
                        attempts.push(Attempt { model: r.model.id.clone(), provider: r.provider.id.clone(), outcome: "ok".into(), error: None, latency_ms: ms(took), streamed: true });
                        let text = c.body.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default();
                        let usage = c.usage.unwrap_or(Tokens { input: plan.prompt_tokens_estimate, output: cost::estimate_tokens(text), estimated: true });
                        result = Ok((c.body, r, usage));
                        break 'routes;
                    }
                    Err(e) => {
                        let retry = e.retry();
                        self.failed_before_answer(r, &e, t0.elapsed(), own_key, &policy.breaker, &mut attempts);
                        if e.is_callers_fault() {
                            result = Err(AionError::bad("upstream_refused", e.to_string()));
                            break 'routes;
                        }
                        result = Err(AionError::Upstream(format!("every route failed before answering; last: {e}")));
                        match retry {
                            Some(wait) if attempt < policy.retries.max => {
                                let wait = wait.unwrap_or(Duration::from_millis(100 << attempt));
                                if wait > Duration::from_millis(policy.retries.max_retry_after_ms) {
                                    continue 'routes;
                                }
                                tokio::time::sleep(wait).await;
                            }
                            _ => continue 'routes,
                        }
                    }
                }
            }
        }
        let (answer, env) = match result {
            Ok((mut body, r, usage)) => {
                let cost = cost::cost_micros(r.model.price, usage.input, usage.output);
                let text = body.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default().to_owned();
                let finish = body.pointer("/choices/0/finish_reason").and_then(Value::as_str).map(str::to_owned);
                body["model"] = r.model.id.clone().into();
                let env = self.finish(&plan, Status::Succeeded, Some(r.route.clone()), attempts, usage, cost, None, Some(Output { text, finish_reason: finish }), None).await;
                body["aion"] = aion_summary(&env);
                (Ok(body), env)
            }
            Err(e) => {
                let err = ErrorBody { code: e.code().into(), message: e.to_string() };
                let env = self.finish(&plan, Status::Failed, None, attempts, Tokens::default(), 0, Some(err), None, None).await;
                (Err(e), env)
            }
        };
        self.metrics.in_flight.dec();
        (answer, env)
    }

    /// Runs `plan` streaming, in its own task: what it sends ends with one
    /// [`Out::Done`]. When the receiver is dropped (the client left), the
    /// upstream call stops and what ran is billed.
    pub fn start_stream(self: &Arc<Self>, plan: Plan) -> mpsc::Receiver<Out> {
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        self.metrics.in_flight.inc();
        let span = plan.span();
        tokio::spawn(
            async move {
                me.drive(plan, tx).await;
                me.metrics.in_flight.dec();
            }
            .instrument(span),
        );
        rx
    }

    async fn drive(&self, plan: Plan, tx: mpsc::Sender<Out>) {
        let policy = plan.loaded.registry.policy.clone();
        let first_timeout = Duration::from_millis(policy.stream.first_token_timeout_ms);
        let stall = Duration::from_millis(policy.stream.stall_timeout_ms);
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut text = String::new();
        let mut total = Tokens::default();
        let mut cost_total = 0i64;
        let mut ttft = None;
        let mut served: Option<Route> = None;
        let mut finish_reason = None;
        let mut continued = false;
        let mut last_error: Option<(String, String)> = None;
        let mut status = Status::Failed;
        let mut client_gone = false;

        let mut i = 0;
        'routes: while i < plan.routes.len() {
            let r = &plan.routes[i];
            i += 1;
            let (key, own_key) = self.key_for(&plan, &r.provider).await;
            let body = Self::upstream_body(&plan, r, &text);
            let mut attempt = 0;
            loop {
                if let Err(a) = self.health.admit(&r.provider.id, Instant::now()) {
                    attempts.push(skipped(r, format!("{a:?}").to_lowercase()));
                    continue 'routes;
                }
                let t0 = Instant::now();
                // the gate: connect, check the status, and wait for a first
                // chunk with content (role-only deltas are held back)
                let upstream_span = tracing::info_span!("aion.upstream", provider = %r.provider.id, model = %r.model.id, attempt);
                let opened = tokio::time::timeout(first_timeout, async {
                    let mut s = self.upstreams.stream(&r.provider, key.as_deref(), &body).await?;
                    let mut held = Vec::new();
                    loop {
                        match s.next().await {
                            Some(Ok(ev)) => {
                                let real = match &ev {
                                    Event::Delta { finish_reason, .. } => !ev.text().is_empty() || finish_reason.is_some() || has_tool_calls(&ev),
                                    Event::Usage(_) => false,
                                };
                                held.push(ev);
                                if real {
                                    return Ok((s, held));
                                }
                            }
                            Some(Err(e)) => return Err(e),
                            None => return Err(ProviderError::Cut { provider: r.provider.id.clone() }),
                        }
                    }
                })
                .instrument(upstream_span)
                .await
                .unwrap_or_else(|_| Err(ProviderError::Timeout { provider: r.provider.id.clone() }));
                let (mut upstream, held) = match opened {
                    Ok(x) => x,
                    Err(e) => {
                        let retry = e.retry();
                        self.failed_before_answer(r, &e, t0.elapsed(), own_key, &policy.breaker, &mut attempts);
                        last_error = Some((e.code().to_owned(), e.to_string()));
                        if e.is_callers_fault() {
                            last_error = Some(("upstream_refused".into(), e.to_string()));
                            break 'routes;
                        }
                        if tx.is_closed() {
                            client_gone = true;
                            break 'routes;
                        }
                        if let Some(wait) = retry {
                            if attempt < policy.retries.max {
                                let wait = wait.unwrap_or(Duration::from_millis(100 << attempt));
                                if wait <= Duration::from_millis(policy.retries.max_retry_after_ms) {
                                    attempt += 1;
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                            }
                        }
                        continue 'routes;
                    }
                };
                let first = t0.elapsed();
                self.health.success(&r.provider.id, first);
                self.metrics.upstream_first_seconds.get_or_create(&crate::metrics::Upstream { provider: r.provider.id.clone(), result: "ok".into() }).observe(first.as_secs_f64());
                if ttft.is_none() {
                    ttft = Some(plan.started.elapsed());
                }
                served = Some(r.route.clone());
                let mut attempt_text = String::new();
                let mut usage: Option<Tokens> = None;
                let mut outcome: Result<(), ProviderError> = Ok(());
                let mut pending: VecDeque<Event> = held.into();
                let mut extended = Instant::now();
                loop {
                    // a long stream keeps its budget hold from being swept
                    if extended.elapsed() > HOLD_EXTEND_EVERY {
                        extended = Instant::now();
                        if let Some((hold, _)) = &plan.hold {
                            let (ledger, hold) = (self.ledger.clone(), hold.clone());
                            tokio::spawn(async move {
                                if let Err(e) = ledger.extend(&hold, HOLD_SECS).await {
                                    tracing::warn!(error = %e, "extending a budget hold failed");
                                }
                            });
                        }
                    }
                    let ev = match pending.pop_front() {
                        Some(ev) => Some(Ok(ev)),
                        None => match tokio::time::timeout(stall, upstream.next()).await {
                            Ok(x) => x,
                            Err(_) => Some(Err(ProviderError::Timeout { provider: r.provider.id.clone() })),
                        },
                    };
                    match ev {
                        None => break,
                        Some(Ok(Event::Usage(u))) => usage = Some(u),
                        Some(Ok(ev @ Event::Delta { .. })) => {
                            let Event::Delta { mut delta, finish_reason: fr } = ev else { continue };
                            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                                attempt_text.push_str(t);
                                text.push_str(t);
                            }
                            if fr.is_some() {
                                finish_reason = fr.clone();
                            }
                            // a continuation's repeated role announcement is dropped
                            if continued {
                                if let Some(o) = delta.as_object_mut() {
                                    o.remove("role");
                                }
                            }
                            if tx.send(Out::Delta { delta, finish_reason: fr, model: r.model.id.clone() }).await.is_err() {
                                client_gone = true;
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            outcome = Err(e);
                            break;
                        }
                    }
                }
                let took = t0.elapsed();
                // bill this attempt: what the provider said, else an estimate
                let estimated = usage.is_none() || outcome.is_err() || client_gone;
                let u = match usage {
                    Some(u) if outcome.is_ok() && !client_gone => u,
                    Some(u) => Tokens { input: u.input, output: u.output.max(cost::estimate_tokens(&attempt_text)), estimated: true },
                    None => Tokens { input: plan.prompt_tokens_estimate, output: cost::estimate_tokens(&attempt_text), estimated },
                };
                total.input += u.input;
                total.output += u.output;
                total.estimated |= u.estimated;
                cost_total += cost::cost_micros(r.model.price, u.input, u.output);
                match outcome {
                    Ok(()) if client_gone => {
                        attempts.push(Attempt { model: r.model.id.clone(), provider: r.provider.id.clone(), outcome: "client_left".into(), error: None, latency_ms: ms(took), streamed: true });
                        self.health.release_probe(&r.provider.id);
                        break 'routes;
                    }
                    Ok(()) => {
                        self.metrics.upstream(&r.provider.id, "ok");
                        attempts.push(Attempt { model: r.model.id.clone(), provider: r.provider.id.clone(), outcome: "ok".into(), error: None, latency_ms: ms(took), streamed: true });
                        status = Status::Succeeded;
                        break 'routes;
                    }
                    Err(e) => {
                        self.metrics.upstream(&r.provider.id, e.code());
                        self.blame(&r.provider.id, &e, own_key, &policy.breaker);
                        attempts.push(failed(r, &e, took, true));
                        last_error = Some((e.code().to_owned(), format!("the stream failed after it started: {e}")));
                        if plan.continue_on_failure && !continued && i < plan.routes.len() {
                            continued = true;
                            let next = plan.routes[i].route.clone();
                            if tx.send(Out::Partial { text: text.clone(), failed: r.route.clone(), next }).await.is_err() {
                                client_gone = true;
                                break 'routes;
                            }
                            continue 'routes;
                        }
                        break 'routes;
                    }
                }
            }
        }
        if client_gone && status != Status::Succeeded {
            status = Status::Cancelled;
            last_error = Some(("client_closed".into(), "the client left before the answer was complete; what ran was billed".into()));
        }
        let error = match status {
            Status::Succeeded => None,
            _ => Some(ErrorBody {
                code: last_error.as_ref().map_or("upstream_failed".into(), |e| if served.is_none() && status == Status::Failed { "upstream_failed".into() } else { e.0.clone() }),
                message: last_error.map_or_else(|| "no route could be tried".into(), |e| if served.is_none() { format!("every route failed before answering; last: {}", e.1) } else { e.1 }),
            }),
        };
        let output = (!text.is_empty() || status == Status::Succeeded).then_some(Output { text, finish_reason });
        let env = self.finish(&plan, status, served, attempts, total, cost_total, error, output, ttft).await;
        let _ = tx.send(Out::Done(Box::new(env))).await;
    }

    /// Settles the reservation, records the task and its metrics.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        plan: &Plan,
        status: Status,
        route: Option<Route>,
        attempts: Vec<Attempt>,
        tokens: Tokens,
        cost_micros: i64,
        error: Option<ErrorBody>,
        output: Option<Output>,
        ttft: Option<Duration>,
    ) -> Envelope {
        if let Some((hold, scopes)) = &plan.hold {
            // a budget never commits past what was reserved: a provider that
            // ignored the output cap is logged, and its excess is not charged
            if cost_micros > plan.reserved {
                tracing::warn!(task = %plan.task_id, cost_micros, reserved_micros = plan.reserved, "a task cost more than its reservation (the provider ignored the output cap?); the budget is charged the reservation");
            }
            if let Err(e) = self.ledger.settle(hold, scopes, plan.reserved, cost_micros.min(plan.reserved)).await {
                tracing::error!(task = %plan.task_id, error = %e, "settling a budget hold failed; the sweep will settle it at its full amount");
            }
        }
        let latency = plan.started.elapsed();
        let env = Envelope {
            id: plan.task_id.clone(),
            status,
            intent: plan.decision.intent.clone(),
            output,
            engine: Engine {
                route: route.clone(),
                chosen_by: plan.decision.chosen_by,
                reason: plan.decision.reason.clone(),
                privacy: plan.decision.privacy,
                attempts,
                registry: plan.loaded.short_digest().to_owned(),
            },
            usage: Usage { latency_ms: ms(latency), ttft_ms: ttft.map(ms), tokens, cost_usd: cost::micros_to_usd(cost_micros), reserved_usd: cost::micros_to_usd(plan.reserved) },
            error,
            created_at: plan.created_at,
        };
        let label = Outcome { api: plan.api.to_owned(), outcome: status.as_str().to_owned() };
        self.metrics.requests.get_or_create(&label).inc();
        self.metrics.request_seconds.get_or_create(&label).observe(latency.as_secs_f64());
        if let Some(r) = &route {
            let m = ModelLabel { model: r.model.clone() };
            self.metrics.spend_micros.get_or_create(&m).inc_by(cost_micros.max(0) as u64);
            self.metrics.tokens.get_or_create(&m).inc_by(tokens.input + tokens.output);
        }
        self.record(&plan.caller, &env, None, None).await;
        env
    }

    /// Queues `env` for the store (a full queue writes at once).
    async fn record(&self, caller: &Caller, env: &Envelope, key: Option<String>, hash: Option<String>) {
        let Some(tx) = &self.records else { return };
        let row = TaskRow {
            id: env.id.clone(),
            subject: caller.subject.clone(),
            idempotency_key: key,
            request_hash: hash,
            status: env.status.as_str().to_owned(),
            record: serde_json::to_value(env).unwrap_or(Value::Null),
            created_at: env.created_at,
            cost_micros: cost::usd_to_micros(env.usage.cost_usd),
        };
        if let Err(mpsc::error::TrySendError::Full(row)) = tx.try_send(row) {
            if let Some(store) = &self.store {
                if let Err(e) = store.put_task(&row).await {
                    tracing::error!(task = %row.id, error = %e, "recording a task failed");
                }
            }
        }
    }

    /// Submits a task (`/v1/tasks`): runs it in the background, its events
    /// kept for `/v1/stream/{id}`. With an idempotency key already used by
    /// this caller for the same request, the earlier task is answered.
    pub async fn submit(self: &Arc<Self>, caller: &Caller, body: Value, opts: Options, idempotency_key: Option<String>) -> Result<(Envelope, bool), AionError> {
        let (me, caller) = (self.clone(), caller.clone());
        // its own task: a client that leaves mid-way leaves no half-made task
        tokio::spawn(async move { me.submit_inner(&caller, body, opts, idempotency_key).await }).await.map_err(|e| AionError::Internal(format!("the task stopped: {e}")))?
    }

    async fn submit_inner(self: &Arc<Self>, caller: &Caller, body: Value, opts: Options, idempotency_key: Option<String>) -> Result<(Envelope, bool), AionError> {
        let hash = idempotency_key.as_ref().map(|_| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(format!("{body}|{opts:?}").as_bytes()))
        });
        if let (Some(key), Some(store)) = (&idempotency_key, &self.store) {
            let probe = TaskRow {
                id: format!("task_{}", uuid::Uuid::now_v7().simple()),
                subject: caller.subject.clone(),
                idempotency_key: Some(key.clone()),
                request_hash: hash.clone(),
                status: "reserved".into(),
                record: Value::Null,
                created_at: chrono::Utc::now().timestamp_millis(),
                cost_micros: 0,
            };
            let mut claimed = store.insert_task_once(&probe).await?;
            // a claim that never became a task (its server died while
            // deciding) is given up after a minute
            if let Some(earlier) = &claimed {
                if earlier.record.is_null() && earlier.created_at < probe.created_at - 60_000 {
                    store.delete_task(&earlier.id).await?;
                    claimed = store.insert_task_once(&probe).await?;
                }
            }
            if let Some(earlier) = claimed {
                if earlier.request_hash != hash {
                    return Err(AionError::Conflict("this Idempotency-Key was used for another request".into()));
                }
                return match self.task(caller, &earlier.id).await {
                    Ok(env) => Ok((env, false)),
                    // the first submission is still being decided
                    Err(_) => Err(AionError::Conflict("a request with this Idempotency-Key is still being accepted; retry in a moment".into())),
                };
            }
            // the key's row is this task's
            let plan = match self.plan(caller, body, opts, "task", true).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = store.delete_task(&probe.id).await;
                    return Err(e);
                }
            };
            return Ok((self.start_task(caller, plan, Some(probe.id), idempotency_key, hash).await, true));
        }
        let plan = self.plan(caller, body, opts, "task", true).await?;
        Ok((self.start_task(caller, plan, None, None, None).await, true))
    }

    async fn start_task(self: &Arc<Self>, caller: &Caller, mut plan: Plan, id: Option<String>, key: Option<String>, hash: Option<String>) -> Envelope {
        if let Some(id) = id {
            plan.task_id = id;
        }
        let running = Envelope {
            id: plan.task_id.clone(),
            status: Status::Running,
            intent: plan.decision.intent.clone(),
            output: None,
            engine: Engine {
                route: plan.decision.routes.first().cloned(),
                chosen_by: plan.decision.chosen_by,
                reason: plan.decision.reason.clone(),
                privacy: plan.decision.privacy,
                attempts: Vec::new(),
                registry: plan.loaded.short_digest().to_owned(),
            },
            usage: Usage { latency_ms: 0, ttft_ms: None, tokens: Tokens::default(), cost_usd: 0.0, reserved_usd: cost::micros_to_usd(plan.reserved) },
            error: None,
            created_at: plan.created_at,
        };
        if let Some(store) = &self.store {
            let row = TaskRow {
                id: running.id.clone(),
                subject: caller.subject.clone(),
                idempotency_key: key,
                request_hash: hash,
                status: "running".into(),
                record: serde_json::to_value(&running).unwrap_or(Value::Null),
                created_at: running.created_at,
                cost_micros: 0,
            };
            if let Err(e) = store.put_task(&row).await {
                tracing::error!(task = %row.id, error = %e, "recording a task failed");
            }
        }
        let (btx, _) = broadcast::channel(1024);
        let live = Arc::new(Mutex::new(LiveTask { subject: caller.subject.clone(), events: Vec::new(), bytes: 0, tx: btx, envelope: None }));
        {
            let mut map = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.0.insert(running.id.clone(), live.clone());
            map.1.push_back(running.id.clone());
            while map.1.len() > LIVE_TASKS {
                if let Some(old) = map.1.pop_front() {
                    map.0.remove(&old);
                }
            }
        }
        let mut rx = self.start_stream(plan);
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let ev = match out {
                    Out::Delta { delta, .. } => match delta.get("content").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => TaskEvent { event: "token", data: json!({"text": t}) },
                        _ => continue,
                    },
                    Out::Partial { text, failed, next } => TaskEvent { event: "partial", data: json!({"text": text, "failed": failed, "next": next}) },
                    Out::Done(env) => {
                        let ev = if env.status == Status::Succeeded {
                            TaskEvent { event: "done", data: serde_json::to_value(&*env).unwrap_or(Value::Null) }
                        } else {
                            TaskEvent { event: "error", data: serde_json::to_value(&*env).unwrap_or(Value::Null) }
                        };
                        let mut t = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        t.envelope = Some(*env);
                        // once it has ended its end says everything: the
                        // token events go (memory stays bounded)
                        t.events = vec![ev.clone()];
                        t.bytes = 0;
                        let _ = t.tx.send(ev);
                        break;
                    }
                };
                let mut t = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let size = ev.data.get("text").and_then(Value::as_str).map_or(64, str::len);
                if t.events.len() < TASK_EVENTS && t.bytes + size <= TASK_EVENT_BYTES {
                    t.bytes += size;
                    t.events.push(ev.clone());
                }
                let _ = t.tx.send(ev);
            }
        });
        running
    }

    /// A task of `caller`: from this process while it is live, else from the store.
    pub async fn task(&self, caller: &Caller, id: &str) -> Result<Envelope, AionError> {
        if let Some(live) = self.live_task(id) {
            let t = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if t.subject == caller.subject {
                if let Some(env) = &t.envelope {
                    return Ok(env.clone());
                }
            }
        }
        let Some(store) = &self.store else { return Err(AionError::NotFound(format!("no task {id}"))) };
        let row = store.task(&caller.subject, id).await?.ok_or_else(|| AionError::NotFound(format!("no task {id}")))?;
        serde_json::from_value(row.record).map_err(|_| AionError::NotFound(format!("task {id} is still being accepted")))
    }

    fn live_task(&self, id: &str) -> Option<Arc<Mutex<LiveTask>>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.get(id).cloned()
    }

    /// The events of a task so far and a receiver of the rest; `None` when
    /// the task is not live in this process.
    pub fn subscribe(&self, caller: &Caller, id: &str) -> Option<(Vec<TaskEvent>, broadcast::Receiver<TaskEvent>)> {
        let live = self.live_task(id)?;
        let t = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.subject != caller.subject {
            return None;
        }
        Some((t.events.clone(), t.tx.subscribe()))
    }

    /// The newest tasks of `caller` (an admin may ask for everyone's).
    pub async fn recent(&self, caller: &Caller, all: bool, limit: i64) -> Result<Vec<Value>, AionError> {
        let Some(store) = &self.store else { return Ok(Vec::new()) };
        if all && !caller.admin {
            return Err(AionError::Forbidden("only an instance admin sees every caller's tasks".into()));
        }
        let rows = store.recent_tasks((!all).then_some(caller.subject.as_str()), limit.clamp(1, 500)).await?;
        Ok(rows.into_iter().filter(|r| !r.record.is_null()).map(|r| json!({"subject": r.subject, "task": r.record})).collect())
    }

    /// The usage feed: ended tasks' records after `after`, oldest first —
    /// the caller's own, or everyone's for an instance admin (`all`).
    pub async fn usage_records(&self, caller: &Caller, all: bool, after: &crate::store::UsageCursor, until: i64, limit: i64) -> Result<Vec<crate::store::UsageRecord>, AionError> {
        let Some(store) = &self.store else { return Ok(Vec::new()) };
        if all && !caller.admin {
            return Err(AionError::Forbidden("only an instance admin reads every caller's usage".into()));
        }
        Ok(store.usage_records((!all).then_some(caller.subject.as_str()), after, until, limit.clamp(1, 1000)).await?)
    }

    /// `/v1/embeddings`: the named embedding model's provider, passed
    /// through (privacy and budgets apply as for chat).
    pub async fn embeddings(self: &Arc<Self>, caller: &Caller, body: Value) -> Result<Value, AionError> {
        let (me, caller) = (self.clone(), caller.clone());
        tokio::spawn(async move { me.embeddings_inner(&caller, body).await }).await.map_err(|e| AionError::Internal(format!("the request stopped: {e}")))?
    }

    async fn embeddings_inner(&self, caller: &Caller, mut body: Value) -> Result<Value, AionError> {
        let opts: Options = match body.as_object_mut().and_then(|o| o.remove("aion")) {
            None | Some(Value::Null) => Options::default(),
            Some(v) => serde_json::from_value(v).map_err(|e| AionError::bad("invalid_options", format!("aion: {e}")))?,
        };
        let asked_local = match opts.privacy.as_deref() {
            None => false,
            Some(p) => Privacy::parse(p).ok_or_else(|| AionError::bad("invalid_privacy", format!("privacy {p:?} is not one of {}", Privacy::NAMES.join(", "))))? == Privacy::LocalOnly,
        };
        let loaded = self.registries.current();
        let reg = &loaded.registry;
        let model_id = body.get("model").and_then(Value::as_str).ok_or_else(|| AionError::bad("invalid_request", "model is required"))?.to_owned();
        let model = reg.models.get(&model_id).ok_or_else(|| AionError::NoRoute(decide::NoRoute::UnknownModel(model_id.clone())))?;
        if model.kind != crate::registry::ModelKind::Embedding {
            return Err(AionError::bad("not_an_embedding_model", format!("{model_id} is a chat model; ask /v1/chat/completions")));
        }
        let input = body.get("input").ok_or_else(|| AionError::bad("invalid_request", "input is required"))?;
        let bytes = input.to_string().len();
        let provider = reg.providers.get(&model.provider).ok_or_else(|| AionError::Internal("the model's provider is gone".into()))?;
        // the intent asked for, else the default one, holds embeddings to its privacy too
        let intent = opts.intent.as_deref().or(reg.policy.default_intent.as_deref()).and_then(|id| reg.intents.get(id));
        let intent_local = intent.is_some_and(|i| i.privacy == Privacy::LocalOnly || reg.policy.local_only_intents.contains(&i.id));
        let local_only = asked_local || intent_local || caller.subjects().iter().any(|s| reg.policy.local_only_subjects.contains(s));
        if local_only && provider.cloud {
            return Err(AionError::NoRoute(decide::NoRoute::AllSkipped(format!("{model_id}: local-only and {} is a cloud provider", provider.id))));
        }
        if let Err(a) = self.health.admit(&provider.id, Instant::now()) {
            return Err(AionError::NoRoute(decide::NoRoute::AllSkipped(format!("{model_id}: {} is {a:?}", provider.id).to_lowercase())));
        }
        if reg.policy.deny_providers.contains(&provider.id) || (!reg.policy.allow_providers.is_empty() && !reg.policy.allow_providers.contains(&provider.id)) {
            return Err(AionError::NoRoute(decide::NoRoute::AllSkipped(format!("{model_id}: provider {} is not allowed by the policy", provider.id))));
        }
        body["model"] = model.upstream.clone().into();
        let worst = cost::cost_micros(model.price, cost::input_tokens_bound(bytes, 1), 0);
        let charges: Vec<Charge> = caller.budgets(&reg.policy.budgets, chrono::Utc::now()).into_iter().map(|(_, c)| c).collect();
        let hold = if charges.is_empty() { None } else { Some(self.ledger.reserve(&charges, worst, 3600).await?) };
        let (key, own_key) = match &provider.api_key_secret {
            Some(s) => match self.keys.key(caller, s).await {
                Some(k) => (Some(k), true),
                None => (loaded.env_keys.get(&provider.id).cloned(), false),
            },
            None => (loaded.env_keys.get(&provider.id).cloned(), false),
        };
        let t0 = Instant::now();
        let answer = self.upstreams.embeddings(provider, key.as_deref(), &body).await;
        match &answer {
            Ok(_) => self.health.success(&provider.id, t0.elapsed()),
            Err(e) => self.blame(&provider.id, e, own_key, &reg.policy.breaker),
        }
        let used = answer.as_ref().ok().and_then(|v| v.pointer("/usage/prompt_tokens")).and_then(Value::as_u64);
        let actual = match &answer {
            Ok(_) => used.map_or(worst, |t| cost::cost_micros(model.price, t, 0)),
            Err(_) => 0,
        };
        if let Some(h) = hold {
            let scopes: Vec<String> = charges.iter().map(|c| c.scope.clone()).collect();
            if let Err(e) = self.ledger.settle(&h, &scopes, worst, actual.min(worst)).await {
                tracing::error!(error = %e, "settling an embeddings hold failed");
            }
        }
        let label = Outcome { api: "embeddings".into(), outcome: if answer.is_ok() { "succeeded" } else { "failed" }.into() };
        self.metrics.requests.get_or_create(&label).inc();
        let mut v = answer.map_err(|e| if e.is_callers_fault() { AionError::bad("upstream_refused", e.to_string()) } else { AionError::Upstream(e.to_string()) })?;
        v["model"] = model_id.into();
        Ok(v)
    }

    /// Settles holds of servers that died mid-call; runs every minute.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                if let Err(e) = me.ledger.sweep().await {
                    tracing::warn!(error = %e, "sweeping budget holds failed");
                }
            }
        });
    }

    /// Reloads the registry when its files change (checked every `every`).
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration, on_change: Arc<dyn Fn(&crate::registries::Change) + Send + Sync>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                if !me.registries.changed_on_disk() {
                    continue;
                }
                match me.registries.reload() {
                    Ok(c) if !c.unchanged => {
                        tracing::info!(from = c.from_version, to = c.to_version, digest = %c.to_digest, "router registry reloaded from its files");
                        on_change(&c);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        me.metrics.reload_failures.inc();
                        tracing::warn!(error = %e, "the router registry's files changed but are not valid; the version in force stays");
                    }
                }
            }
        });
    }
}

fn has_tool_calls(ev: &Event) -> bool {
    matches!(ev, Event::Delta { delta, .. } if delta.get("tool_calls").is_some_and(|t| !t.is_null()))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn skipped(r: &PlannedRoute, why: String) -> Attempt {
    Attempt { model: r.model.id.clone(), provider: r.provider.id.clone(), outcome: "skipped".into(), error: Some(why), latency_ms: 0, streamed: false }
}

fn failed(r: &PlannedRoute, e: &ProviderError, took: Duration, streamed: bool) -> Attempt {
    Attempt { model: r.model.id.clone(), provider: r.provider.id.clone(), outcome: e.code().into(), error: Some(e.to_string()), latency_ms: ms(took), streamed }
}

/// What an OpenAI-shaped answer carries of the envelope.
pub fn aion_summary(env: &Envelope) -> Value {
    json!({
        "task": env.id,
        "status": env.status,
        "engine": {"route": env.engine.route, "chosen_by": env.engine.chosen_by, "reason": env.engine.reason, "attempts": env.engine.attempts},
        "usage": env.usage,
        "error": env.error,
    })
}

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 10_000;

/// Checks a chat request's shape before anything is decided.
pub fn check_chat_body(body: &Value) -> Result<(), AionError> {
    let Some(o) = body.as_object() else { return Err(AionError::bad("invalid_request", "the body must be a JSON object")) };
    let Some(messages) = o.get("messages").and_then(Value::as_array) else {
        return Err(AionError::bad("invalid_request", "messages is required: a list of {role, content}"));
    };
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(AionError::bad("invalid_request", format!("messages must hold 1 to {MAX_MESSAGES} messages")));
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("system" | "developer" | "user" | "assistant" | "tool")) {
            return Err(AionError::bad("invalid_request", format!("messages[{i}].role must be system, developer, user, assistant or tool")));
        }
        match m.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(Value::Null) | None if role == Some("assistant") => {}
            _ => return Err(AionError::bad("invalid_request", format!("messages[{i}].content must be a string or a list of parts"))),
        }
    }
    if let Some(m) = o.get("model") {
        if !m.is_string() {
            return Err(AionError::bad("invalid_request", "model must be a string"));
        }
    }
    for k in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = o.get(k) {
            if !v.as_u64().is_some_and(|n| (1..=10_000_000).contains(&n)) {
                return Err(AionError::bad("invalid_request", format!("{k} must be a whole number from 1")));
            }
        }
    }
    if o.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(AionError::NotSupported("n other than 1".into()));
    }
    if let Some(s) = o.get("stream") {
        if !s.is_boolean() {
            return Err(AionError::bad("invalid_request", "stream must be true or false"));
        }
    }
    Ok(())
}

/// Writes task records in batches (one transaction per row, many rows a
/// tick), so the hot path only queues.
async fn write_records(store: Store, mut rx: mpsc::Receiver<TaskRow>) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let n = rx.recv_many(&mut batch, 256).await;
        if n == 0 {
            return;
        }
        if let Err(e) = store.put_tasks(&batch).await {
            // one bad row or a passing error must not lose the others
            tracing::warn!(rows = batch.len(), error = %e, "recording a batch of tasks failed; writing them one by one");
            for row in &batch {
                if let Err(e) = store.put_task(row).await {
                    tracing::error!(task = %row.id, error = %e, "recording a task failed");
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_bodies_are_checked_before_anything_else() {
        assert!(check_chat_body(&json!({"messages": [{"role": "user", "content": "hi"}]})).is_ok());
        assert!(check_chat_body(&json!({"messages": [{"role": "assistant", "content": null, "tool_calls": []}]})).is_ok());
        for bad in [json!([]), json!({}), json!({"messages": []}), json!({"messages": [{"role": "boss", "content": "x"}]}), json!({"messages": [{"role": "user"}]}), json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}), json!({"messages": [{"role": "user", "content": "x"}], "model": 3})] {
            let e = check_chat_body(&bad).expect_err("refused");
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(check_chat_body(&json!({"messages": [{"role": "user", "content": "x"}], "n": 2})).expect_err("n").status(), axum::http::StatusCode::NOT_IMPLEMENTED);
    }
}
