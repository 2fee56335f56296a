//! The canonical result envelope every API answers with (REST, SSE,
//! WebSocket, gRPC, and beside OpenAI's own shapes as `aion`).

use serde::{Deserialize, Serialize};

use crate::cost::Tokens;
use crate::decide::{ChosenBy, Route};
use crate::registry::Privacy;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Succeeded,
    /// Failed: no candidate answered, or the stream was cut.
    Failed,
    /// The client left; what ran was billed.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        self != Status::Running
    }
}

/// One try of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub model: String,
    pub provider: String,
    /// `ok`, `skipped`, or an error code.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
    /// Whether this attempt's output reached the client.
    pub streamed: bool,
}

/// How the task was routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    /// The route that produced the answer (the last that streamed).
    pub route: Option<Route>,
    pub chosen_by: ChosenBy,
    pub reason: String,
    pub privacy: Privacy,
    pub attempts: Vec<Attempt>,
    /// The registry version's digest (first 12 hex digits).
    pub registry: String,
}

/// What it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    pub tokens: Tokens,
    pub cost_usd: f64,
    /// What was reserved before the call (the worst case).
    pub reserved_usd: f64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub text: String,
    pub finish_reason: Option<String>,
}

/// An error in an envelope or an API answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// The result envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub status: Status,
    pub intent: Option<String>,
    pub output: Option<Output>,
    pub engine: Engine,
    pub usage: Usage,
    pub error: Option<ErrorBody>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}
